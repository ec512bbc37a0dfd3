"""Where the daemon's memory goes: a wrapper that runs it with tracemalloc, and a diff.

    python -X tracemalloc=25 bench/memprofile.py daemon [--snapshot-s S] OUT -- run -c CONFIG
    python bench/memprofile.py diff OUT [--top 25] [--from N] [--to M]

`daemon` runs `consolegw run` (gateway's __main__) in this process with a sampler thread
beside it; nothing is added to the product. `bench/soak.py --memprofile OUT` starts every
daemon life this way. Into OUT (one sub-folder per process, named by its pid) it writes:

- samples.jsonl, every SAMPLE_S: VmRSS, smaps_rollup's anonymous and file-backed resident
  memory, what tracemalloc traces (when it is on), the asyncio task count and gc objects;
- snap-NNN.tracemalloc every SNAPSHOT_S (tracemalloc's own dump format) with gc-NNN.json,
  the live gc-tracked objects counted by type, and tasks-NNN.json, the live asyncio tasks
  by name, coroutine and where each pending one waits.

RSS growing while tracemalloc stays flat is native memory (a C library, SQLite's page
cache, malloc fragmentation); the `diff` of two snapshots names the Python code that holds
the growth, grouped by traceback, biggest growth first, and the object types that grew.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import json
import os
import runpy
import sys
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from pathlib import Path

SAMPLE_S = 10.0
SNAPSHOT_S = 120.0


def smaps_kb(pid: int) -> dict[str, int]:
    """smaps_rollup's fields in kB (Rss, Anonymous, Pss_File...), empty once it is gone."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return out
    for line in text.splitlines()[1:]:
        name, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            out[name] = int(fields[0])
    return out


def anon_by_mapping(pid: int) -> dict[str, int]:
    """Anonymous resident kB by where it lives: "heap" (brk: glibc's main arena), "big"
    (anonymous mappings of 1 MiB or more: other threads' arenas, large mmapped blocks,
    thread stacks), "small" (the rest)."""
    out = {"heap": 0, "big": 0, "small": 0}
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return out
    kind = ""
    for line in text.splitlines():
        first = line.split(maxsplit=6)
        if "-" in first[0] and not first[0].endswith(":"):
            lo, hi = (int(x, 16) for x in first[0].split("-"))
            name = first[5] if len(first) > 5 else ""
            size_kb = (hi - lo) // 1024
            kind = (
                "heap"
                if name == "[heap]"
                else ""
                if name
                else "big"
                if size_kb >= 1024
                else "small"
            )
        elif first[0] == "Anonymous:" and kind:
            out[kind] += int(first[1])
    return out


def _status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",  # bytes from sbrk (the main arena)
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",  # bytes in mmapped blocks
            "usmblks",
            "fsmblks",
            "uordblks",  # bytes in use in the arenas
            "fordblks",  # bytes free in the arenas (kept by glibc)
            "keepcost",
        )
    ]


def _native_counters() -> Callable[[], dict[str, int]]:
    """What SQLite and glibc say they hold, through ctypes on the libraries this process
    has loaded already (the sqlite3 module's libsqlite3, libc): SQLite's own allocation
    count (page caches, statements) and glibc's arena bytes in use and free. Without a
    library or symbol (another libc), its counters are left out."""
    import sqlite3  # noqa: F401  (loads libsqlite3 before the lookup below)

    memory_used: Callable[[], int] | None = None
    mallinfo2: Callable[[], _Mallinfo2] | None = None
    with contextlib.suppress(OSError, AttributeError):
        sqlite = ctypes.CDLL("libsqlite3.so.0")
        sqlite.sqlite3_memory_used.restype = ctypes.c_int64
        memory_used = sqlite.sqlite3_memory_used
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = _Mallinfo2
        mallinfo2 = libc.mallinfo2

    def counters() -> dict[str, int]:
        out: dict[str, int] = {}
        if memory_used is not None:
            out["sqlite_kb"] = int(memory_used()) // 1024
        if mallinfo2 is not None:
            info = mallinfo2()  # one walk of the arenas per sample
            out["malloc_used_kb"] = (info.uordblks + info.hblkhd) // 1024
            out["malloc_free_kb"] = info.fordblks // 1024
        return out

    return counters


def _awaiting(coro: object) -> str:
    """Where a coroutine waits: the innermost function of its await chain, and its line."""
    where = ""
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            where = f"{frame.f_code.co_qualname} ({Path(frame.f_code.co_filename).name}:"
            where += f"{frame.f_lineno})"
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return where


def task_census() -> dict[str, int]:
    """The live asyncio tasks by name, coroutine, state and (pending) where they wait."""
    census: Counter[str] = Counter()
    for task in [o for o in gc.get_objects() if isinstance(o, asyncio.Task)]:
        coro = task.get_coro()
        state = "done" if task.done() else f"waits in {_awaiting(coro)}"
        census[f"{task.get_name()}: {getattr(coro, '__qualname__', coro)}, {state}"] += 1
    return dict(census.most_common())


def _task_count() -> int:
    # Counted from the sampler thread: asyncio.all_tasks() needs the loop's own thread.
    return sum(1 for o in gc.get_objects() if isinstance(o, asyncio.Task))


class Sampler:
    def __init__(self, out: Path, snapshot_s: float = SNAPSHOT_S) -> None:
        self.out = out
        self.snapshot_s = snapshot_s
        self.out.mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        self.snapshots = 0
        self.native = _native_counters()

    def sample(self) -> None:
        pid = os.getpid()
        smaps = smaps_kb(pid)
        row: dict[str, object] = {
            "t": round(time.monotonic() - self.started, 1),
            "wall": time.time(),
            "rss_kb": _status_kb(pid, "VmRSS"),
            "anon_kb": smaps.get("Anonymous"),
            "file_kb": smaps.get("Rss", 0) - smaps.get("Anonymous", 0),
            **{f"anon_{k}_kb": v for k, v in anon_by_mapping(pid).items()},
            "threads": threading.active_count(),
            "gc_objects": len(gc.get_objects()),
            "tasks": _task_count(),
            **self.native(),
        }
        if tracemalloc.is_tracing():
            current, peak = tracemalloc.get_traced_memory()
            row["traced_kb"] = current // 1024
            row["traced_peak_kb"] = peak // 1024
            row["tracemalloc_kb"] = tracemalloc.get_tracemalloc_memory() // 1024
        with (self.out / "samples.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")

    def snapshot(self) -> None:
        n = self.snapshots
        self.snapshots += 1
        types = Counter(type(o).__qualname__ for o in gc.get_objects())
        (self.out / f"gc-{n:03d}.json").write_text(json.dumps(dict(types.most_common(300))))
        (self.out / f"tasks-{n:03d}.json").write_text(json.dumps(task_census(), indent=1))
        if tracemalloc.is_tracing():
            tracemalloc.take_snapshot().dump(str(self.out / f"snap-{n:03d}.tracemalloc"))

    def run(self) -> None:
        next_snapshot = self.started + self.snapshot_s
        while True:
            time.sleep(SAMPLE_S)
            try:
                self.sample()
                if time.monotonic() >= next_snapshot:
                    next_snapshot += self.snapshot_s
                    self.snapshot()
            except Exception as exc:  # a failed sample must not take the daemon down
                print(f"memprofile: {exc!r}", file=sys.stderr)


def run_daemon(out: Path, gateway_args: list[str], snapshot_s: float) -> None:
    sampler = Sampler(out / str(os.getpid()), snapshot_s)
    sampler.sample()
    threading.Thread(target=sampler.run, name="memprofile", daemon=True).start()
    sys.argv = ["consolegw", *gateway_args]
    # Run as a script, this folder is sys.path[0]: the daemon imports from the project root.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)
    runpy.run_module("gateway", run_name="__main__", alter_sys=True)


# --- the diff ------------------------------------------------------------------------------


def _snapshot(folder: Path, n: int) -> tracemalloc.Snapshot:
    snap = tracemalloc.Snapshot.load(str(folder / f"snap-{n:03d}.tracemalloc"))
    # tracemalloc's own bookkeeping and this module's are not the daemon's.
    return snap.filter_traces(
        [
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, __file__),
        ]
    )


def diff(folder: Path, first: int, last: int, top: int) -> None:
    snaps = sorted(folder.glob("snap-*.tracemalloc"))
    if not snaps:
        print(f"{folder}: no snapshots")
    else:
        last = last if last >= 0 else len(snaps) + last
        old, new = _snapshot(folder, first), _snapshot(folder, last)
        print(f"tracemalloc {first} -> {last} ({folder})")
        for key in ("filename", "traceback"):
            stats = new.compare_to(old, key)
            print(f"-- top {top} by size_diff, grouped by {key}")
            for stat in stats[:top]:
                print(
                    f"{stat.size_diff / 1024:+10.1f} KiB {stat.count_diff:+8d} blocks "
                    f"(now {stat.size / 1024:.1f} KiB)"
                )
                frames = stat.traceback.format(limit=8 if key == "traceback" else 1)
                for line in frames:
                    if line.strip().startswith("File"):
                        print(f"      {line.strip()}")
    gcs = sorted(folder.glob("gc-*.json"))
    if len(gcs) >= 2:
        a = Counter(json.loads(gcs[first].read_text()))
        b = Counter(json.loads(gcs[last].read_text()))
        grown = sorted(((b[k] - a[k], k) for k in b), reverse=True)[:top]
        print(f"-- gc objects by type, {gcs[first].name} -> {gcs[last].name}")
        for n, name in grown:
            print(f"{n:+8d} {name} (now {b[name]})")
    tasks = sorted(folder.glob("tasks-*.json"))
    if len(tasks) >= 2:
        a = Counter(json.loads(tasks[first].read_text()))
        b = Counter(json.loads(tasks[last].read_text()))
        print(f"-- asyncio tasks, {tasks[first].name} -> {tasks[last].name}")
        for name in sorted(set(a) | set(b), key=lambda k: a[k] - b[k]):
            if a[name] != b[name]:
                print(f"{b[name] - a[name]:+5d} {name} (now {b[name]})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("daemon", help="run consolegw with the sampler (args after --)")
    d.add_argument("out", type=Path)
    d.add_argument("--snapshot-s", type=float, default=SNAPSHOT_S, help="between snapshots")
    d.add_argument("gateway_args", nargs=argparse.REMAINDER)
    f = sub.add_parser("diff", help="compare two snapshots of one process's folder")
    f.add_argument("folder", type=Path)
    f.add_argument("--from", dest="first", type=int, default=0)
    f.add_argument("--to", dest="last", type=int, default=-1)
    f.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    if args.command == "daemon":
        rest = args.gateway_args[1:] if args.gateway_args[:1] == ["--"] else args.gateway_args
        run_daemon(args.out, rest, args.snapshot_s)
    else:
        diff(args.folder, args.first, args.last, args.top)


if __name__ == "__main__":
    main()
