"""The one reconnect policy: wait `initial_s`, multiply the wait by `factor` after every
failure up to `maximum_s`, start over after a success.

Every loop that reopens a lost device or reconnects a link (radio channels, audio cards,
Modbus links, the MQTT link, the supervisor, mqtt-view) spaces its attempts with it, so
the delays are written once. No jitter: each gateway talks to its own devices and broker,
there is no herd of clients to spread out. It lives in `drivers/` because a driver (the
Modbus link) spaces its own reconnects and drivers do not import `gateway`.
"""

from __future__ import annotations

import asyncio
import math


class Backoff:
    """The delays between attempts of one reconnect loop.

    `next()` gives the wait before the next attempt and lengthens the one after it;
    `reset()` after a success. The first wait is `initial_s`; each later one is the previous
    times `factor`, capped at `maximum_s`.
    """

    def __init__(self, initial_s: float, maximum_s: float, *, factor: float = 2.0) -> None:
        if not (math.isfinite(initial_s) and initial_s > 0):
            raise ValueError(f"initial_s must be a positive number of seconds: {initial_s!r}")
        if not (math.isfinite(maximum_s) and maximum_s > 0):
            raise ValueError(f"maximum_s must be a positive number of seconds: {maximum_s!r}")
        if not (math.isfinite(factor) and factor >= 1):
            raise ValueError(f"factor must be at least 1: {factor!r}")
        self.initial_s = initial_s
        self.maximum_s = maximum_s
        self.factor = factor
        self._delay_s = initial_s

    @property
    def delay_s(self) -> float:
        """The wait `next()` will give (for a log line that says when the next try is)."""
        return self._delay_s

    def next(self) -> float:
        """The wait before the next attempt; the one after it is longer (up to the cap)."""
        delay = self._delay_s
        self._delay_s = min(delay * self.factor, self.maximum_s)
        return delay

    def reset(self) -> None:
        """An attempt succeeded (or a new problem began): the next wait is `initial_s`."""
        self._delay_s = self.initial_s

    async def sleep(self) -> None:
        """Wait `next()` seconds."""
        await asyncio.sleep(self.next())
