"""The command line as a user runs it: `consolegw ...` in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def consolegw(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The installed entry point when the venv has it (what a technician types), else the
    package's __main__; stdout and stderr captured as text, never raising on the exit code."""
    script = Path(sys.executable).with_name("consolegw")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "gateway"]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, cwd=ROOT, check=False, timeout=timeout
    )
