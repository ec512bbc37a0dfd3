"""One daemon per state_dir: an flock on `<state_dir>/consolegw.lock`.

Two daemons on one console would fight over the radios (each keys and unkeys, and closing a
port drops its lines under the other) and over one outbox. The daemon takes this lock before
it builds anything and holds it until it exits; the kernel drops it however the process ends,
SIGKILL included, so a lock file left behind never blocks a restart. `consolegw diag` takes
the same lock while it drives the hardware (`probe`), so a daemon started meanwhile refuses
to run, and diag refuses while a daemon holds it.

flock, not a pid file: a pid can be reused, a lock cannot outlive its holder. The file holds
the holder's pid for people (`cat`); who holds it is read from /proc/locks, which is right
even when the holder could not write the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gateway.errors import ConsoleGwError

LOCK_NAME = "consolegw.lock"


def lock_path(state_dir: Path) -> Path:
    return state_dir / LOCK_NAME


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a lock, as far as this process can see."""

    pid: int | None
    command: str | None = None

    def describe(self) -> str:
        if self.pid is None:
            return "another process (pid unknown)"
        return f"pid {self.pid}" + (f" ({self.command})" if self.command else "")


class StateDirLocked(ConsoleGwError):
    """Another process holds the state_dir's lock: a daemon (or diag) runs on it."""

    def __init__(self, state_dir: Path, holder: Holder) -> None:
        self.state_dir = state_dir
        self.holder = holder
        super().__init__(
            f"another consolegw runs on state_dir {state_dir} (gateway.state_dir): "
            f"{holder.describe()} holds {lock_path(state_dir)}; stop it first "
            "(two daemons on one console fight over its radios)"
        )


class StateDirLock:
    """A held lock. `release()` (or leaving the `with` block) lets the next holder in."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor of the open file drops the flock

    def __enter__(self) -> StateDirLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _command(pid: int) -> str | None:
    """The holder's command line, shortened: `consolegw run -c FILE`, not the interpreter's
    path and the script's."""
    with contextlib.suppress(OSError, IndexError):
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        words = [w.decode(errors="replace") for w in raw.split(b"\0") if w]
        if Path(words[0]).name.startswith("python") and len(words) > 1 and words[1] != "-m":
            words = words[1:]  # a script run by its interpreter (a console script)
        text = " ".join([Path(words[0]).name, *words[1:]])
        return text if len(text) <= 100 else text[:97] + "..."
    return None


def _holder(fd: int) -> Holder:
    """The pid /proc/locks gives for the flock on `fd`'s file; else the pid in the file."""
    st = os.fstat(fd)
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if "->" in fields:  # a waiter, not a holder
                continue
            if fields[1] == "FLOCK" and fields[5] == inode:
                pid = int(fields[4])
                if pid > 0 and pid != os.getpid():
                    return Holder(pid, _command(pid))
    with contextlib.suppress(OSError, ValueError):
        text = os.pread(fd, 32, 0).decode().strip()
        pid = int(text)
        return Holder(pid, _command(pid))
    return Holder(None)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def acquire(state_dir: Path) -> StateDirLock:
    """The daemon's lock: makes state_dir, takes the lock (or raises StateDirLocked), writes
    our pid into the file. Any other failure is a ConsoleGwError naming gateway.state_dir."""
    path = lock_path(state_dir)
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ConsoleGwError(
            f"cannot open the lock {path} in state_dir (gateway.state_dir): {exc.strerror or exc}"
        ) from None
    try:
        try:
            locked = _try_lock(fd)
        except OSError as exc:  # e.g. ENOLCK: a file system without locks
            raise ConsoleGwError(
                f"cannot lock {path} in state_dir (gateway.state_dir): {exc.strerror or exc}"
            ) from None
        if not locked:
            raise StateDirLocked(state_dir, _holder(fd))
        with contextlib.suppress(OSError):  # the pid is for people; the lock is what counts
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return StateDirLock(path, fd)


@dataclass(frozen=True, slots=True)
class LockProbe:
    """What diag learned from the lock.

    `free`: no daemon runs on this state_dir; `lock` is set when diag now holds the lock
    itself (the file existed and could be opened), so no daemon can start until it is
    released. `held`: a daemon (or another diag) runs; `holder` says who. `unknown`: the lock
    could not be inspected; `reason` says why (e.g. permission denied).
    """

    state: Literal["free", "held", "unknown"]
    path: Path
    holder: Holder | None = None
    reason: str = ""
    lock: StateDirLock | None = None


def probe(state_dir: Path) -> LockProbe:
    """Inspect the lock without creating anything, and take it when it is free.

    Nothing is created: a file made here by root would be one the daemon's user cannot
    open. No state_dir or no lock file means no daemon runs there: a running daemon has both.
    The file is opened read-only (flock needs no write access), so a technician who can read
    state_dir can run diag."""
    path = lock_path(state_dir)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return LockProbe("free", path)
    except OSError as exc:
        return LockProbe("unknown", path, reason=f"cannot open {path}: {exc.strerror or exc}")
    try:
        locked = _try_lock(fd)
    except OSError as exc:
        os.close(fd)
        return LockProbe("unknown", path, reason=f"cannot lock it: {exc.strerror or exc}")
    if locked:
        return LockProbe("free", path, lock=StateDirLock(path, fd))
    try:
        return LockProbe("held", path, holder=_holder(fd))
    finally:
        os.close(fd)
