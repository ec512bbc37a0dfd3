"""Runs each device as its own task; one failing device never stops another."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from drivers.backoff import Backoff

log = logging.getLogger(__name__)

TaskFactory = Callable[[], Awaitable[None]]


class Supervisor:
    """Keeps named tasks running, restarting a crashed one with backoff.

    Device tasks handle expected failures (device lost, broker away) themselves; what
    reaches the supervisor is a bug or an unforeseen error. It is logged with its traceback
    once per crash and the task restarts, so one bad device cannot take the daemon down.
    """

    def __init__(self, *, max_backoff_s: float = 30.0) -> None:
        self._max_backoff_s = max_backoff_s
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = False
        self.crashes: dict[str, int] = {}

    def start(self, name: str, factory: TaskFactory) -> None:
        if name in self._tasks:
            raise ValueError(f"task {name!r} already running")
        self.crashes[name] = 0
        self._tasks[name] = asyncio.create_task(self._keep_running(name, factory), name=name)

    async def _keep_running(self, name: str, factory: TaskFactory) -> None:
        backoff = Backoff(0.5, self._max_backoff_s)
        while not self._stopping:
            started = time.monotonic()
            try:
                await factory()
                if not self._stopping:
                    log.error("%s: task ended unexpectedly; restarting", name)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.crashes[name] += 1
                log.exception("%s: task crashed (crash %d); restarting", name, self.crashes[name])
            if time.monotonic() - started > 60:
                backoff.reset()  # it ran fine for a while: this is a new problem
            await backoff.sleep()

    async def stop(self, grace_s: float = 5.0) -> None:
        """Cancel every task and wait for their cleanup (PTT release runs in it)."""
        self._stopping = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:
                log.error("%s: did not stop within %.1f s", task.get_name(), grace_s)
        self._tasks.clear()
