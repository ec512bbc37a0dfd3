"""bench/signalling.py keeps running end to end: a smoke run, its figures in the last line.

Only that it ran is checked here, not the targets: the bench's own output says those."""

from __future__ import annotations

from tests.bench_tools import run_bench


def test_signalling_bench_runs_and_reports() -> None:
    figures = run_bench("signalling.py", "--quick", timeout=240)
    rows = figures["dtmf"]["clean"]["rows"]
    assert [r["snr_db"] for r in rows] == [6.0, 0.0, -3.0]
    assert rows[0]["consolegw"] == 1.0 and rows[0]["multimon"] == 1.0, "both read clean tones"
    for standard in ("ccir", "zvei1", "eea"):
        first = figures["selcall"][standard]["clean"]["rows"][0]
        assert first["consolegw"] == 1.0 and first["multimon"] == 1.0, standard
    assert figures["two_tone"]["clean"]["rows"][0]["consolegw"] == 1.0
    assert figures["mdc1200"]["clean"]["rows"][0]["consolegw"] == 1.0
    assert figures["false_mdc_in_noise"] == []
    assert figures["throughput_x_realtime_8k"] > 0
    assert figures["throughput_x_realtime_8k_dtmf_and_selcall"] > 0
    assert isinstance(figures["pass"], bool)
    assert "pass: " in figures["_stdout"]
