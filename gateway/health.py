"""How a lost device is told in the log and in its state: once at loss and at recovery (by
the owner, in its fault or offline line), once when the cause changes, and a summary every
ten minutes while it stays lost.

A technician reading the journal an hour into an outage must see that the gateway is still
trying and what the device last answered, without a line per reopen attempt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from gateway.events import utc_timestamp

SUMMARY_S = 600.0


class DeviceHealth:
    """The loss and recovery of one device (a radio interface, an IO module)."""

    def __init__(
        self,
        *,
        what: str,
        logger: logging.Logger,
        summary_s: float = SUMMARY_S,
        quiet_first_change: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._what = what
        self._quiet_first_change = quiet_first_change
        self._log = logger
        self._summary_s = summary_s
        self._clock = clock
        self._lost_at: float | None = None
        self._last_summary = 0.0
        self.lost_since: str | None = None
        """When the device was lost (RFC 3339), while it is."""
        self.attempts = 0
        """Failed attempts to reach it again since it was lost."""
        self.last_error: str | None = None
        self._refused = 0

    @property
    def lost(self) -> bool:
        return self._lost_at is not None

    def failed(self, error: str) -> bool:
        """The device was lost, or another attempt to reach it failed. True at the loss
        itself, which the owner logs (as its fault or offline line) with the cause."""
        now = self._clock()
        if self._lost_at is None:
            self._lost_at = self._last_summary = now
            self.lost_since = utc_timestamp()
            self.attempts = 0
            self.last_error = error
            return True
        self.attempts += 1
        if error != self.last_error:
            # A device reopened at once fails differently from the loss as a rule
            # ("connection lost", then "connection refused"): with `quiet_first_change`
            # that is in the state only. A later change of cause is news.
            if self.attempts > 1 or not self._quiet_first_change:
                self._log.warning("%s still lost, now: %s", self._what, error)
            self.last_error = error
        if now - self._last_summary >= self._summary_s:
            self._last_summary = now
            self._log.warning(
                "%s lost for %s: %d attempts to reach it, last error: %s",
                self._what,
                _duration(now - self._lost_at),
                self.attempts,
                self.last_error,
            )
        return False

    def refused(self) -> None:
        """A request was refused because the device is lost (told at recovery, not each)."""
        if self._lost_at is not None:
            self._refused += 1

    def recovered(self) -> str | None:
        """Back: how long it was away, for the owner's recovery line (None if never lost)."""
        if self._lost_at is None:
            return None
        away = f"after {_duration(self._clock() - self._lost_at)}, {self.attempts} attempts"
        if self._refused:
            plural = "s" if self._refused != 1 else ""
            away += f", {self._refused} request{plural} refused meanwhile"
        self._refused = 0
        self._lost_at = None
        self.lost_since = None
        self.attempts = 0
        self.last_error = None
        return away


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
