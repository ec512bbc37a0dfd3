"""Gateway-side errors. The root is drivers.errors.ConsoleGwError, shared with the drivers."""

from typing import ClassVar, Literal

from drivers.errors import (
    ConsoleGwError,
    DeviceError,
    DeviceLost,
    DeviceTimeout,
    DeviceUnavailable,
)

__all__ = [
    "BadRequest",
    "CommandError",
    "ConfigError",
    "ConsoleGwError",
    "DeviceError",
    "DeviceLost",
    "DeviceTimeout",
    "DeviceUnavailable",
    "ErrorCode",
    "UnknownCommand",
    "UnknownTarget",
]


ErrorCode = Literal["bad_request", "unknown_command", "unknown_target", "refused", "internal_error"]
"""What kind of failure a response reports, for CAD to branch on."""


class ConfigError(ConsoleGwError):
    """A config file is unreadable or invalid. The message names file, key and problem."""


class CommandError(ConsoleGwError):
    """A command was refused; the message goes back to the requester as is.

    `code` starts the response's `error` and is its `code`: what kind of refusal, for CAD.
    """

    code: ClassVar[ErrorCode] = "refused"


class RefusedWhileLost(CommandError):
    """Refused because the device it needs is lost: a fault the log has told already.

    The refusal is logged at debug and counted by the device's health, whose recovery line
    says how many requests it refused meanwhile: a dispatcher pressing PTT on a dead radio
    for a minute must not put a line per press between the loss and the recovery.
    """


class BadRequest(CommandError):
    """The request itself is malformed: refused before anything acted on it."""

    code: ClassVar[ErrorCode] = "bad_request"


class UnknownCommand(CommandError):
    code: ClassVar[ErrorCode] = "unknown_command"


class UnknownTarget(CommandError):
    code: ClassVar[ErrorCode] = "unknown_target"
