"""Gateway-side errors. The root is drivers.errors.ConsoleGwError, shared with the drivers."""

from drivers.errors import (
    ConsoleGwError,
    DeviceError,
    DeviceLost,
    DeviceTimeout,
    DeviceUnavailable,
)

__all__ = [
    "CommandError",
    "ConfigError",
    "ConsoleGwError",
    "DeviceError",
    "DeviceLost",
    "DeviceTimeout",
    "DeviceUnavailable",
]


class ConfigError(ConsoleGwError):
    """A config file is unreadable or invalid. The message names file, key and problem."""


class CommandError(ConsoleGwError):
    """A command was refused; the message goes back to the requester as is."""
