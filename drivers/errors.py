"""The one exception root of consolegw and the few device errors every driver raises."""


class ConsoleGwError(Exception):
    """Root of every error consolegw raises on purpose."""


class DeviceError(ConsoleGwError):
    """A device misbehaved: bad reply, refused setting, unexpected state."""


class DeviceUnavailable(DeviceError):
    """The device cannot be opened (absent, busy, permission denied). Retry later."""


class DeviceLost(DeviceError):
    """An open device stopped answering or vanished. Close it and reopen with backoff."""


class DeviceTimeout(DeviceError):
    """The device did not answer in time."""
