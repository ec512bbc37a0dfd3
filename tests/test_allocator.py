"""gateway.allocator on this machine's glibc: the daemon's allocator settings take, and an
environment that sets glibc's own tunables is left alone."""

from __future__ import annotations

import subprocess
import sys

from tests.mqtt_tools import ROOT

PROBE = """
import ctypes, sys, threading
from gateway.allocator import tune_allocator
print(tune_allocator())
# With two arenas at most, a block freed in a third thread's arena is still served: the
# settings took without breaking allocation from many threads.
def work():
    blocks = [ctypes.create_string_buffer(200_000) for _ in range(20)]
    del blocks
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print("ok")
"""


def probe(env: dict[str, str]) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.split()


def test_the_settings_take_on_glibc() -> None:
    assert probe({"PATH": "/usr/bin:/bin"}) == ["True", "ok"]


def test_an_environment_that_tunes_glibc_wins() -> None:
    assert probe({"PATH": "/usr/bin:/bin", "MALLOC_ARENA_MAX": "4"}) == ["False", "ok"]
