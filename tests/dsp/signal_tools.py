"""What the signalling tests share: padding, band noise, the multimon-ng binary, and feeding
a streaming decoder in pieces."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from typing import Protocol, TypeVar

import numpy as np
import pytest

from hw_sim import phone_line

MULTIMON_RATE = 22050  # what `multimon-ng -t raw` reads


def padded(x: np.ndarray, rate: int) -> np.ndarray:
    quiet = np.zeros(rate // 4, dtype=np.float32)
    return np.concatenate((quiet, x, quiet))


def band_noise(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-power noise in 300-3300 Hz (a radio or phone channel's band)."""
    return phone_line.band_noise(n, sample_rate=rate, power=1.0, rng=rng)


def multimon_binary() -> str:
    found = shutil.which("multimon-ng")
    if found is None:
        if os.environ.get("CI", "").lower() in {"true", "1"}:
            pytest.fail("multimon-ng is not installed; make test installs it")
        pytest.skip("multimon-ng is not installed (apt-get install multimon-ng)")
    return found


E_co = TypeVar("E_co", covariant=True)


class Streaming(Protocol[E_co]):
    def feed(self, samples: np.ndarray) -> Sequence[E_co]: ...
    def flush(self) -> Sequence[E_co]: ...


def feed_in_pieces(decoder: Streaming[E_co], x: np.ndarray, cuts: list[int]) -> list[E_co]:
    """Every event of `x` fed in blocks of the lengths in `cuts`, the rest in one, flushed."""
    events: list[E_co] = []
    at = 0
    for cut in cuts:
        events += decoder.feed(x[at : at + cut])
        at += cut
    return [*events, *decoder.feed(x[at:]), *decoder.flush()]


def feed_in_blocks(
    decoder: Streaming[E_co], x: np.ndarray, rng: np.random.Generator, longest: int
) -> list[E_co]:
    """Every event of `x` fed in random blocks of 1 to `longest` samples, flushed."""
    cuts: list[int] = []
    total = 0
    while total < len(x):
        cuts.append(int(rng.integers(1, longest)))
        total += cuts[-1]
    return feed_in_pieces(decoder, x, cuts)
