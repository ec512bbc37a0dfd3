"""The `ptt` check: each radio keyed for --key-seconds, watching its PTT read-back and
carrier; always unkeyed and closed again."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from drivers.errors import DeviceError
from gateway.tools.diag.core import CheckResult, DiagContext, register_check

READBACK_GRACE_S = 0.5
"""How long a read-back may lag the PTT command before the check calls it wrong."""
SAMPLE_S = 0.05
"""Line sampling period while keyed."""


async def _read(radio: Any) -> Any:
    async with asyncio.timeout(2.0):
        return await radio.read_lines()


async def _key_one(channel_id: str, section: Any, seconds: float) -> CheckResult:
    """Key one radio for `seconds`, watching read-back and carrier. Always unkeys."""
    from gateway.radios import make_radio

    radio = make_radio(section.radio)
    where = radio.description
    data: dict[str, Any] = {"interface": where}
    try:
        async with asyncio.timeout(10.0):
            await radio.open()
    except (DeviceError, TimeoutError) as exc:
        await radio.close()
        return CheckResult("ptt", channel_id, "FAIL", f"cannot open {where}: {exc}", data)
    try:
        data["readback"] = radio.can_read_back_ptt  # known once open (RFC 2217 probes it)
        before = await _read(radio)
        data["cos_before"] = before.cos
        if before.ptt:
            return CheckResult(
                "ptt",
                channel_id,
                "FAIL",
                f"{where} reads back KEYED before keying: PTT line stuck or wired inverted",
                data,
            )
        if before.cos:
            return CheckResult(
                "ptt",
                channel_id,
                "SKIP",
                "carrier present (someone may be talking): not keyed; run again when quiet",
                data,
            )
        return await _keyed_period(radio, channel_id, seconds, data)
    except (DeviceError, TimeoutError) as exc:
        return CheckResult("ptt", channel_id, "FAIL", f"{where} lost during the test: {exc}", data)
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await radio.set_ptt(False)
        await radio.close()


async def _keyed_period(
    radio: Any, channel_id: str, seconds: float, data: dict[str, Any]
) -> CheckResult:
    readback = radio.can_read_back_ptt
    start = time.monotonic()
    await radio.set_ptt(True)
    keyed_at: float | None = None
    dropped = False
    cos_seen = False
    while True:
        now = time.monotonic()
        if now - start >= seconds:
            break
        lines = await _read(radio)
        cos_seen = cos_seen or lines.cos
        if readback:
            if lines.ptt and keyed_at is None:
                keyed_at = time.monotonic()
            elif not lines.ptt and keyed_at is not None:
                dropped = True
        await asyncio.sleep(SAMPLE_S)
    await radio.set_ptt(False)
    released_at = time.monotonic()
    data["keyed_s"] = round(released_at - start, 2)
    data["cos_during"] = cos_seen
    release_s: float | None = None
    while readback:
        lines = await _read(radio)
        if not lines.ptt:
            release_s = time.monotonic() - released_at
            break
        if time.monotonic() - released_at > READBACK_GRACE_S:
            break
        await asyncio.sleep(SAMPLE_S / 2)
    carrier = "carrier seen while keyed" if cos_seen else "no carrier while keyed"
    if not readback:
        return CheckResult(
            "ptt",
            channel_id,
            "PASS",
            f"keyed {data['keyed_s']:g} s; no PTT read-back on this interface: confirm the "
            f"radio's TX indicator; {carrier}",
            data,
        )
    data["keyup_ms"] = None if keyed_at is None else round((keyed_at - start) * 1000, 1)
    data["release_ms"] = None if release_s is None else round(release_s * 1000, 1)
    if keyed_at is None or keyed_at - start > READBACK_GRACE_S:
        return CheckResult(
            "ptt",
            channel_id,
            "FAIL",
            "PTT commanded but the interface never read back keyed: check the PTT wiring, "
            f"polarity (ptt_invert) and the radio's PTT input; {carrier}",
            data,
        )
    if release_s is None:
        return CheckResult(
            "ptt",
            channel_id,
            "FAIL",
            "still reads back KEYED after release: PTT line stuck; unplug the interface",
            data,
        )
    if dropped:
        return CheckResult(
            "ptt",
            channel_id,
            "FAIL",
            f"read-back dropped while keyed: intermittent PTT line or power; {carrier}",
            data,
        )
    return CheckResult(
        "ptt",
        channel_id,
        "PASS",
        f"keyed {data['keyed_s']:g} s, read back keyed in {data['keyup_ms']:g} ms and "
        f"unkeyed in {data['release_ms']:g} ms; {carrier}",
        data,
    )


async def check_ptt(ctx: DiagContext) -> list[CheckResult]:
    assert ctx.config is not None
    results = []
    for channel_id, section in ctx.config.channels.items():
        if not ctx.wanted(channel_id):
            continue
        if section.radio is None:
            results.append(CheckResult("ptt", channel_id, "SKIP", "no radio interface configured"))
            continue
        ctx.progress(f"ptt: keying {channel_id} for {ctx.key_seconds:g} s")
        results.append(await _key_one(channel_id, section, ctx.key_seconds))
    return results


register_check(
    "ptt",
    "each radio keyed for --key-seconds: PTT read-back and carrier",
    check_ptt,
    keys_transmitters=True,
)
