"""Fixtures of the driver tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from drivers.serial_radio import SerialRadio


@pytest.fixture
async def make_radio() -> AsyncIterator[Callable[..., SerialRadio]]:
    """SerialRadio instances (keyword arguments as its constructor's), closed after the test."""
    radios: list[SerialRadio] = []

    def make(**kwargs: Any) -> SerialRadio:
        radio = SerialRadio(**kwargs)
        radios.append(radio)
        return radio

    yield make
    for radio in radios:
        await radio.close()
