"""DeviceHealth: a long outage is a few lines, not one per reopen attempt."""

from __future__ import annotations

import logging

import pytest

from gateway.health import DeviceHealth


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_hour_lost_is_a_handful_of_lines(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    log = logging.getLogger("test.health")
    health = DeviceHealth(what="module io1", logger=log, clock=clock)
    caplog.set_level(logging.INFO, logger="test.health")
    assert health.failed("cannot connect") is True  # the owner logs the loss itself
    for second in range(1, 3601):  # an attempt a second for an hour
        clock.now = 1000.0 + second
        error = "cannot connect" if second < 1800 else "exception 4: DEVICE FAILURE"
        assert health.failed(error) is False
    messages = [r.getMessage() for r in caplog.records]
    # One change of cause and a summary every ten minutes.
    assert len(messages) == 7, messages
    assert messages[2] == "module io1 still lost, now: exception 4: DEVICE FAILURE"
    assert "module io1 lost for 10 min: 600 attempts" in messages[0]
    assert health.attempts == 3600 and health.last_error == "exception 4: DEVICE FAILURE"
    assert health.lost_since is not None
    assert health.recovered() == "after 60 min, 3600 attempts"
    assert health.lost_since is None and health.attempts == 0 and not health.lost
    assert health.recovered() is None


def test_a_quiet_first_change_is_in_the_state_only(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    log = logging.getLogger("test.health")
    health = DeviceHealth(what="radio", logger=log, clock=clock, quiet_first_change=True)
    caplog.set_level(logging.INFO, logger="test.health")
    health.failed("connection lost")
    health.failed("connection refused")  # the reopen right after the loss
    assert caplog.records == [] and health.last_error == "connection refused"
    health.failed("permission denied")
    assert [r.getMessage() for r in caplog.records] == ["radio still lost, now: permission denied"]


def test_requests_refused_while_lost_are_told_at_recovery() -> None:
    clock = Clock()
    health = DeviceHealth(what="radio", logger=logging.getLogger("test.health"), clock=clock)
    health.failed("connection lost")
    for _ in range(3):
        health.refused()
    clock.now += 4.0
    assert health.recovered() == "after 4.0 s, 0 attempts, 3 requests refused meanwhile"
    health.failed("connection lost")  # the next outage starts from none
    health.refused()
    assert health.recovered() == "after 0.0 s, 0 attempts, 1 request refused meanwhile"
