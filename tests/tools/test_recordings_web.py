"""`consolegw recordings serve`: the read-only web page, over an index and Ogg/Opus files the
recorder's own store wrote.

Its HTTP boundary is tested as a hostile client would use it (no token, a wrong one, bad
filters, ranges outside the file, an index row naming a file outside the folder, fuzzed
query strings); the page itself in Debian's headless Chromium through ChromeDriver, as a
supervisor would: load it, filter by channel and by text, play a record, read the TTY
transcript beside it.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.recorder.store import RecordingStore
from gateway.tools.recordings_web import make_server
from tests.tools.helpers import record_tone

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
TOKEN = "s3cret-token"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    store = RecordingStore(folder=tmp_path / "rec")
    store.open()
    record_tone(store, "fire", T0, 4.0)
    record_tone(store, "fire", T0 + 10, 3.0, tty_text="HELLO 911 GA\nMY HOUSE IS ON FIRE\n")
    record_tone(store, "ems", T0 + 20, 2.0, fault="cos_stuck")
    record_tone(store, "ems", T0 + 30, 2.5, direction="tx", requested_by="cad-7/tx-42")
    record_tone(store, "<b>police</b>", T0 + 40, 1.0)  # a hostile name is text, never markup
    store.close()
    return tmp_path / "rec"


@pytest.fixture
def served(folder: Path) -> Iterator[tuple[str, int]]:
    server, _ = make_server(
        RecordingStore(folder=folder), host="127.0.0.1", port=0, token=TOKEN, title="test"
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield "127.0.0.1", server.server_address[1]
    server.shutdown()
    server.server_close()


def _get(
    where: tuple[str, int], path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(*where, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_every_request_needs_the_token(served: tuple[str, int]) -> None:
    for path in ("/", "/api/recordings", "/api/channels", "/audio/1", "/app.js"):
        status, _, body = _get(served, path)
        assert status == 401, path
        assert "token" in json.loads(body)["error"]
        assert _get(served, path, {"Authorization": "Bearer wrong"})[0] == 401
        assert _get(served, path, {"Cookie": "consolegw_recordings=wrong"})[0] == 401
    status, headers, _ = _get(served, f"/?token={TOKEN}")
    assert status == 200
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert _get(served, "/api/channels", {"Cookie": cookie.split(";")[0]})[0] == 200
    assert "script-src 'self'" in headers["Content-Security-Policy"]


def test_the_api_lists_filters_and_names_a_bad_filter(served: tuple[str, int]) -> None:
    def listed(query: str) -> list[dict[str, Any]]:
        status, _, body = _get(served, f"/api/recordings?{query}", AUTH)
        assert status == 200, body
        records: list[dict[str, Any]] = json.loads(body)["recordings"]
        return records

    assert len(listed("")) == 5
    assert [r["channel"] for r in listed("channel=ems")] == ["ems", "ems"]
    assert [r["requested_by"] for r in listed("direction=tx")] == ["cad-7/tx-42"]
    assert [r["faults"] for r in listed("text=cos_stuck")] == [["cos_stuck"]]
    found = listed("text=" + quote("on fire"))
    assert len(found) == 1 and "MY HOUSE IS ON FIRE" in found[0]["tty_text"]
    # Times as a datetime-local field sends them (local, no zone) and as RFC 3339.
    local = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(T0 + 25))
    assert len(listed(f"since={local}")) == 2
    assert len(listed("until=2027-01-15T08:00:15Z")) == 2
    channels = json.loads(_get(served, "/api/channels", AUTH)[2])["channels"]
    assert [c["channel"] for c in channels] == ["<b>police</b>", "ems", "fire"]

    for query, word in (
        ("direction=up", "direction"),
        ("since=yesterday", "since"),
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("text=a%00b", "NUL"),
    ):
        status, _, body = _get(served, f"/api/recordings?{query}", AUTH)
        assert status == 400, query
        assert word in json.loads(body)["error"], (query, body)


def test_audio_is_served_whole_and_in_ranges(served: tuple[str, int], folder: Path) -> None:
    first = json.loads(_get(served, "/api/recordings?channel=fire&limit=1", AUTH)[2])
    rec = first["recordings"][0]
    data = Path(rec["path"]).read_bytes()
    status, headers, body = _get(served, rec["audio_url"], AUTH)
    assert status == 200 and body == data and headers["Content-Type"] == "audio/ogg"
    assert headers["Accept-Ranges"] == "bytes"
    size = len(data)
    for header, first_byte, last_byte in (
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, size - 1),
        ("bytes=-50", size - 50, size - 1),
        (f"bytes=10-{size + 500}", 10, size - 1),
    ):
        status, headers, body = _get(served, rec["audio_url"], {**AUTH, "Range": header})
        assert status == 206, header
        assert body == data[first_byte : last_byte + 1], header
        assert headers["Content-Range"] == f"bytes {first_byte}-{last_byte}/{size}"
    status, headers, _ = _get(served, rec["audio_url"], {**AUTH, "Range": f"bytes={size}-"})
    assert status == 416
    assert _get(served, "/audio/99999", AUTH)[0] == 404
    assert _get(served, "/audio/-1", AUTH)[0] == 404
    assert _get(served, "/audio/1%2F..%2F..", AUTH)[0] == 404


def test_a_file_outside_the_recordings_folder_is_never_served(
    served: tuple[str, int], folder: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.ogg"
    secret.write_bytes(b"not a recording")
    with sqlite3.connect(folder / "index.sqlite") as db:
        db.execute("UPDATE recordings SET path = ? WHERE id = 1", (str(secret),))
        db.execute("UPDATE recordings SET path = ? WHERE id = 2", (str(folder / ".." / "x"),))
    for record_id in (1, 2):
        status, _, body = _get(served, f"/audio/{record_id}", AUTH)
        assert status == 404 and b"not a recording" not in body


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(["/", "/api/recordings", "/api/recordings/", "/audio/", "/api/x"]),
    query=st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=80),
    tail=st.text(alphabet="0123456789abc%/.-", max_size=12),
    range_header=st.one_of(
        st.none(),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30).map(
            lambda s: "bytes=" + s
        ),
        st.from_regex(r"bytes=-?[0-9]{0,12}-?[0-9]{0,12}(,[0-9]{0,3}-[0-9]{0,3})?", fullmatch=True),
    ),
)
def test_any_request_is_answered_and_never_a_server_error(
    served: tuple[str, int], path: str, query: str, tail: str, range_header: str | None
) -> None:
    headers = dict(AUTH)
    if range_header is not None:
        headers["Range"] = range_header
    target = path + (quote(tail, safe="%/") if path.endswith("/") and path != "/" else "")
    target += "?" + quote(query, safe="=&%+")
    status, _, body = _get(served, target, headers)
    assert status in (200, 206, 400, 404, 416), (target, status, body[:200])
    if status >= 400:
        assert "error" in json.loads(body)


# --- the page in a real browser ---------------------------------------------------------------

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser() -> Iterator[Any]:
    if CHROMIUM is None or CHROMEDRIVER is None:  # make test installs both (Makefile)
        pytest.fail("Debian's chromium and chromium-driver are needed: run make test")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace for the sandbox
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(
        options=options, service=Service(executable_path=CHROMEDRIVER, log_output=os.devnull)
    )
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def cli_served(folder: Path) -> Iterator[str]:
    """The real command, as a technician starts it; its printed address."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "recordings", "--folder", str(folder), "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "CONSOLEGW_RECORDINGS_TOKEN": TOKEN},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, line + (proc.stderr.read() if proc.stderr else "")
        yield line.split(": ", 1)[1].strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.slow
def test_a_supervisor_finds_and_plays_a_record_in_chromium(cli_served: str, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    assert urlsplit(cli_served).query == f"token={TOKEN}"
    wait = WebDriverWait(browser, 15)
    browser.get(cli_served)

    def rows() -> list[Any]:
        found: list[Any] = browser.find_elements(By.CSS_SELECTOR, "#records tbody tr")
        return found

    def status_is(text: str) -> Any:
        return lambda _: browser.find_element(By.ID, "status").text == text

    wait.until(status_is("5 recordings"))
    assert len(rows()) == 5
    assert "token" not in browser.current_url  # moved to the cookie, out of the history
    # The hostile channel name is shown as text.
    names = [b.text.split("\n")[0] for b in browser.find_elements(By.CSS_SELECTOR, "nav button")]
    assert names == ["All channels", "<b>police</b>", "ems", "fire"]
    assert browser.find_elements(By.CSS_SELECTOR, "nav b") == []

    # Per channel.
    browser.find_element(By.CSS_SELECTOR, 'nav button[data-channel="ems"]').click()
    wait.until(status_is("2 recordings"))
    assert {r.find_elements(By.TAG_NAME, "td")[1].text for r in rows()} == {"ems"}
    browser.find_element(By.CSS_SELECTOR, 'nav button[data-channel=""]').click()
    wait.until(status_is("5 recordings"))

    # By the TTY caller's words.
    box = browser.find_element(By.ID, "text")
    box.send_keys("on fire")
    browser.find_element(By.ID, "apply").click()
    wait.until(status_is("1 recording"))
    (row,) = rows()
    assert "MY HOUSE IS ON FIRE" in row.text

    # Play it: the browser fetches, decodes and plays the Ogg/Opus file.
    row.find_element(By.CSS_SELECTOR, "button.play").click()
    transcript = browser.find_element(By.ID, "transcript")
    wait.until(lambda _: transcript.is_displayed())
    assert transcript.text == "HELLO 911 GA\nMY HOUSE IS ON FIRE"
    wait.until(
        lambda _: browser.execute_script(
            "const p = document.getElementById('player');return !p.paused && p.currentTime > 0.5;"
        )
    )
    duration = browser.execute_script("return document.getElementById('player').duration;")
    assert abs(duration - 3.0) < 0.1, duration
    assert browser.find_element(By.ID, "status").get_attribute("class") != "error"

    # A filter the index refuses is said on the page.
    browser.find_element(By.ID, "reset").click()
    wait.until(status_is("5 recordings"))
    browser.execute_script("document.getElementById('text').value = 'a\\u0000b';")
    browser.find_element(By.ID, "apply").click()
    wait.until(lambda _: "NUL" in browser.find_element(By.ID, "status").text)

    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    # The refused filter's 400 is the only complaint the console shows.
    assert all("400" in e["message"] for e in severe), severe
