"""Small facts that must outlive the process: which radios this run keyed, alarm latches.

One JSON file per kind of fact in state_dir, replaced atomically (write, then rename), so a
crash at any moment leaves the old version or the new one, never half of either. The files
are tiny and change only when a radio keys or an alarm changes, so a rewrite is cheap.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class JsonMemory:
    """A dict of JSON values kept in one file. Call from one thread (the event loop).

    `fsync=False` survives a process crash (the kernel has the data) but not a power cut:
    right for what a power cut resets anyway (a radio interface loses its keyed line).
    """

    def __init__(self, path: Path, *, fsync: bool) -> None:
        self._path = path
        self._fsync = fsync
        self._data: dict[str, Any] = self._load()
        self._failing = False

    def _load(self) -> dict[str, Any]:
        try:
            loaded = json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            # Unreadable memory is not a reason to stay off the air: start empty, say so.
            log.warning("%s unreadable (%s); starting without it", self._path, exc)
            return {}
        if not isinstance(loaded, dict):
            log.warning("%s holds no JSON object; starting without it", self._path)
            return {}
        return loaded

    def get(self, key: str) -> Any:
        return self._data.get(key)

    def items(self) -> list[tuple[str, Any]]:
        return list(self._data.items())

    def set(self, key: str, value: Any) -> None:
        """Store `value` (None deletes the key) and write the file before returning."""
        if value is None:
            if key not in self._data:
                return
            del self._data[key]
        else:
            if self._data.get(key) == value:
                return
            self._data[key] = value
        self._write()

    def _write(self) -> None:
        tmp = self._path.with_name(self._path.name + ".tmp")
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("w", encoding="utf-8") as out:
                json.dump(self._data, out, separators=(",", ":"))
                if self._fsync:
                    out.flush()
                    os.fsync(out.fileno())
            os.replace(tmp, self._path)
        except OSError as exc:
            # A full or read-only disk must not stop a PTT or an alarm: log once, carry on.
            if not self._failing:
                self._failing = True
                log.error("cannot write %s: %s (kept in memory only)", self._path, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()
            return
        if self._failing:
            self._failing = False
            log.info("%s written again", self._path)
