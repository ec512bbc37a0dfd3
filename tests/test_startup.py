"""The start of a run in one line: first opens are gathered, failures and later news are not."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from gateway.startup import StartupSummary, startup_open

owner = logging.getLogger("test.startup.owner")
summary_log = logging.getLogger("test.startup.summary")


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> list[str]:
        return [f"{r.levelname} {r.getMessage()}" for r in self.records]


@pytest.fixture
def lines() -> Iterator[Lines]:
    # Two handlers on the root, as a daemon under systemd with a second one (caplog) has:
    # a record held back must be held back from both, and counted once.
    first, second = Lines(), Lines()
    root = logging.getLogger()
    root.addHandler(first)
    root.addHandler(second)
    level = root.level
    root.setLevel(logging.DEBUG)
    yield first
    for handler in (first, second):
        handler.filters.clear()
    root.removeHandler(first)
    root.removeHandler(second)
    root.setLevel(level)
    assert first.text() == second.text()


def opened(device: str, detail: str, level: int = logging.INFO) -> None:
    owner.log(level, "%s open: %s", device, detail, extra=startup_open(device, detail))


def test_every_device_open_is_one_line(lines: Lines) -> None:
    summary = StartupSummary(["channel fire", "module io-1"], summary_log)
    summary.install()
    opened("channel fire", "rfc2217://a:1")
    owner.warning("unrelated news")
    assert lines.text() == ["WARNING unrelated news"]
    opened("module io-1", "modbus-tcp://b:502 device 1")
    assert summary.done
    assert lines.text()[1:] == [
        "INFO all 2 devices open: channel fire: rfc2217://a:1; module io-1: modbus-tcp://b:502 "
        "device 1"
    ]
    # After the start, a first open (a device that came late) is its own line again.
    opened("channel fire", "again")
    assert lines.text()[-1] == "INFO channel fire open: again"


def test_the_window_ends_naming_what_did_not_open(lines: Lines) -> None:
    summary = StartupSummary(["channel fire", "channel ems", "audio device card"], summary_log)
    summary.install()
    opened("channel fire", "x", logging.WARNING)  # e.g. unkeyed what the last run left keyed
    owner.warning("channel ems: FAULT device_lost: radio interface unavailable")
    summary.finish()
    summary.finish()  # once only
    assert lines.text() == [
        "WARNING channel ems: FAULT device_lost: radio interface unavailable",
        "WARNING 1 of 3 devices open: channel fire: x; not open yet: channel ems, audio "
        "device card (each says why in its own line)",
    ]
    opened("channel ems", "late")
    assert lines.text()[-1] == "INFO channel ems open: late"


def test_a_reopen_within_the_window_is_news_and_unknown_devices_pass(lines: Lines) -> None:
    summary = StartupSummary(["channel fire", "channel ems"], summary_log)
    summary.install()
    opened("channel fire", "first")
    opened("channel fire", "second")
    opened("channel other", "not expected")
    assert lines.text() == [
        "INFO channel fire open: second",
        "INFO channel other open: not expected",
    ]
    summary.finish()
    assert "WARNING 1 of 2 devices open: channel fire: first" in lines.text()[-1]


def test_nothing_expected_installs_nothing(lines: Lines) -> None:
    summary = StartupSummary([], summary_log)
    summary.install()
    assert summary.done
    opened("channel fire", "x")
    summary.finish()
    assert lines.text() == ["INFO channel fire open: x"]
