"""The one exception root of consolegw and the few device errors every driver raises."""


class ConsoleGwError(Exception):
    """Root of every error consolegw raises on purpose."""


class DeviceError(ConsoleGwError):
    """A device misbehaved: bad reply, refused setting, unexpected state.

    `follow_up` marks an error that only repeats an earlier one: the driver did not even
    try the device (it is backing off after a failure), so the cause is still that failure.
    """

    def __init__(self, *args: object, follow_up: bool = False) -> None:
        super().__init__(*args)
        self.follow_up = follow_up


class DeviceUnavailable(DeviceError):
    """The device cannot be opened (absent, busy, permission denied). Retry later."""


class DeviceLost(DeviceError):
    """An open device stopped answering or vanished. Close it and reopen with backoff."""


class DeviceTimeout(DeviceError):
    """The device did not answer in time."""
