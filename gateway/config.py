"""The config file: one TOML document validated into typed, frozen models.

Every problem is reported as ``FILE: KEY.PATH: problem`` so a technician can fix it without
reading code; the CLI turns ConfigError into exit status 2.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.config_base import ConfigModel, HostName, Identifier, host_problem
from gateway.errors import ConfigError
from gateway.radios import RadioSection, kind_of

# The pieces every config section is made of, shared with the radio kinds' sections.
_Model = ConfigModel
_host_problem = host_problem


def _mqtt_string_problem(value: str, max_bytes: int = 65_535) -> str | None:
    """Why a broker would refuse this as an MQTT UTF-8 string (MQTT 5 section 1.5.4), or
    None. mosquitto drops the connection, so the daemon would never come online."""
    for c in value:
        code = ord(c)
        if code < 0x20 or 0x7F <= code <= 0x9F:
            return f"contains the control character U+{code:04X}"
        if 0xD800 <= code <= 0xDFFF:
            return f"contains the lone surrogate U+{code:04X}"
        if 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE:
            return f"contains the Unicode non-character U+{code:04X}"
    if len(value.encode()) > max_bytes:
        return f"is longer than {max_bytes} bytes"
    return None


class GatewaySection(_Model):
    id: Identifier = "console-01"
    state_dir: Path = Path("/var/lib/consolegw")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    standby: bool = False
    """Installed but not yet configured: run with no channel, alarm input or Modbus module,
    publish this console's state (standby true) and key nothing. The package installs its
    config with this set; remove it when the first channel is added."""


class TlsSection(_Model):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False
    """Skip broker host name verification. For lab use only."""

    @model_validator(mode="after")
    def _key_needs_cert(self) -> TlsSection:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file is set but cert_file is not")
        return self


@dataclass(frozen=True, slots=True)
class BrokerEndpoint:
    """One broker of `mqtt.urls`: where it is and whether TLS is used."""

    url: str
    host: str
    port: int
    tls: bool


def _endpoint(url: str, tls_section: bool) -> BrokerEndpoint:
    parts = urlsplit(url)
    return BrokerEndpoint(
        url=url,
        host=parts.hostname or "127.0.0.1",
        port=parts.port or (8883 if parts.scheme == "mqtts" else 1883),
        tls=parts.scheme == "mqtts" or tls_section,
    )


def _broker_url_problem(value: str) -> str | None:
    parts = urlsplit(value)
    if parts.scheme not in ("mqtt", "mqtts"):
        return "must start with mqtt:// or mqtts://"
    if not parts.hostname:
        return "has no host name"
    problem = _host_problem(parts.hostname)
    if problem is not None:
        return problem
    try:
        _ = parts.port
    except ValueError as exc:
        return f"bad port: {exc}"
    return None


class MqttSection(_Model):
    url: str = "mqtt://127.0.0.1:1883"
    """The broker; with `urls`, the first of them."""
    urls: tuple[str, ...] = ()
    """Redundant brokers in order of preference: the gateway uses the first that answers,
    fails over to the next when its broker goes, and returns to the first when it is back."""
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    """MQTT version: auto tries 5 and falls back to 3.1.1 when a broker refuses or ignores a
    v5 CONNECT. Response topic and correlation data need 5."""
    return_to_first_s: float = Field(default=60.0, ge=0, le=86_400)
    """While on a later broker of `urls`, how often to look whether the first is back
    (0: stay on the broker that works)."""
    prefix: str = ""
    """Topic prefix; empty means consolegw/<gateway.id>."""
    client_id: str = ""
    username: str | None = None
    password: str | None = None
    password_file: Path | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    tls: TlsSection | None = None
    max_request_bytes: int = Field(default=65_536, ge=256, le=16 * 1024 * 1024)
    """A request payload larger than this is refused unread (bad_request)."""
    max_request_depth: int = Field(default=32, ge=2, le=256)
    """Deepest JSON nesting a request may have; deeper is refused before it is parsed."""

    @model_validator(mode="before")
    @classmethod
    def _url_is_the_first_of_urls(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("urls"):
            if "url" in data:
                raise ValueError("set url or urls, not both")
            urls = data["urls"]
            if isinstance(urls, list | tuple) and isinstance(urls[0], str):
                data = {**data, "url": urls[0]}
        return data

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        problem = _broker_url_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("urls")
    @classmethod
    def _check_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for n, url in enumerate(value):
            problem = _broker_url_problem(url)
            if problem is not None:
                raise ValueError(f"{url!r} (entry {n + 1}) {problem}")
        if len(set(value)) != len(value):
            raise ValueError("names a broker twice")
        return value

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if any(c in value for c in "+#") or value.startswith("/") or value.endswith("/"):
            raise ValueError("must not contain '+' or '#' nor start or end with '/'")
        # Every topic is the prefix and a short tail; a topic is at most 65,535 bytes.
        problem = _mqtt_string_problem(value, max_bytes=1024)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("client_id", "username")
    @classmethod
    def _check_mqtt_string(cls, value: str | None) -> str | None:
        problem = None if value is None else _mqtt_string_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("password")
    @classmethod
    def _check_password(cls, value: str | None) -> str | None:
        if value is not None and len(value.encode("utf-8", "surrogatepass")) > 65_535:
            raise ValueError("is longer than 65535 bytes")
        return value

    @model_validator(mode="after")
    def _one_password(self) -> MqttSection:
        if self.password is not None and self.password_file is not None:
            raise ValueError("set password or password_file, not both")
        return self

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def uses_tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts" or self.tls is not None

    @property
    def brokers(self) -> tuple[BrokerEndpoint, ...]:
        """Every broker to use, first preferred: `urls`, or `url` alone."""
        return tuple(_endpoint(u, self.tls is not None) for u in (self.urls or (self.url,)))


class OutboxSection(_Model):
    max_events: int = Field(default=100_000, ge=100)
    """Events kept while the broker is unreachable. Alarm events are kept past this bound."""
    fsync: bool = True
    """fsync every commit (survives power loss); false survives a process crash only."""
    in_flight: int = Field(default=64, ge=1, le=10_000)
    """QoS 1 publishes awaiting PUBACK at once."""


class AudioDeviceSection(_Model):
    """A sound card (or one direction of it), chosen by name, never by index."""

    device: str
    """Name pattern: the exact PortAudio device name, or a substring / regular expression."""
    hostapi: str | None = None
    """PortAudio host API, e.g. "ALSA", when a name appears under several."""
    samplerate: int = Field(default=8000, ge=4000, le=192_000)
    channels: int = Field(default=1, ge=1, le=32)
    blocksize: int = Field(default=160, ge=16, le=8192)
    latency_s: float = Field(default=0.2, gt=0, le=2)

    @field_validator("device", "hostapi")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not value:
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _block_within_second(self) -> AudioDeviceSection:
        if self.blocksize > self.samplerate:
            raise ValueError("blocksize must not exceed samplerate (one second)")
        return self


class ChannelAudioSection(_Model):
    """The audio of a channel: one column of a capture device, and what to watch for."""

    device: Identifier
    column: int = Field(default=0, ge=0, le=31)
    activity_margin_db: float = Field(default=12.0, ge=0, le=60)
    """Audio is active this far above the noise floor..."""
    activity_min_dbfs: float = Field(default=-55.0, le=0)
    """...and above this level, whatever the floor."""
    attack_ms: float = Field(default=40.0, ge=0, le=5000)
    hang_ms: float = Field(default=600.0, ge=0, le=30_000)
    dead_below_dbfs: float = Field(default=-80.0, le=0)
    """Below this for dead_after_s: dead audio (a live line carries at least some noise)."""
    dead_after_s: float = Field(default=5.0, gt=0)
    clip_fraction: float = Field(default=0.001, gt=0, le=1)
    """Samples at full scale, as a fraction of a second's worth, that count as clipping."""
    hum_dbfs: float = Field(default=-45.0, le=0)
    """50/60 Hz hum (with harmonics) above this level is a fault."""
    cos_audio_mismatch_s: float = Field(default=3.0, gt=0)
    """Carrier without audio, or audio without carrier, for this long: a fault."""
    recall_s: float = Field(default=300.0, ge=1, le=3600)
    """How much audio the instant-recall ring buffer keeps."""
    recall_on_fault_s: float = Field(default=30.0, ge=0, le=3600)
    """Seconds written to a WAV automatically when a fault is raised (0: never)."""
    record: bool = True
    """Record this channel's transmissions (when [recorder] is enabled)."""


class ChannelTtySection(_Model):
    """TTY/TDD (Baudot) on a channel's audio: decode callers, send the call taker's replies."""

    enabled: bool = True
    shift: Literal["auto", "unshift_on_space", "keep"] = "auto"
    """Callers' shift convention. "auto" finds it from each caller's signal (a FIGS or LTRS
    sent again right after a space shows it; until then the more plausible reading is
    shown and read again when it shows). "keep": TTYs that keep the shift across a space
    (TIA-825-A); "unshift_on_space": ones that unshift (RTTY practice, ITA2 machines)."""
    unshift_on_space: bool | None = None
    """Deprecated, use `shift`: true is "unshift_on_space", false "keep"."""
    reply_baud: float = 45.45
    output_device: Identifier | None = None
    """Audio device that plays replies; by default the channel's capture device."""
    output_column: int | None = Field(default=None, ge=0, le=31)
    """Column replies play on; by default the channel's capture column."""
    reply_level_dbfs: float = Field(default=-12.0, ge=-40, le=0)

    @model_validator(mode="before")
    @classmethod
    def _old_unshift_on_space(cls, data: Any) -> Any:
        """The old switch still works: it sets `shift`, unless `shift` is given too."""
        if isinstance(data, dict) and data.get("unshift_on_space") is not None:
            if "shift" in data:
                raise ValueError(
                    "unshift_on_space is replaced by shift: give only shift "
                    '("auto", "unshift_on_space" or "keep")'
                )
            value = data["unshift_on_space"]
            if isinstance(value, bool):
                data = {**data, "shift": "unshift_on_space" if value else "keep"}
        return data

    @field_validator("reply_baud")
    @classmethod
    def _baud(cls, value: float) -> float:
        if value not in (45.45, 50.0):
            raise ValueError("must be 45.45 or 50")
        return value


class PageSection(_Model):
    """A two-tone page (Quick Call II and alike) by its tones; without b_hz a long tone."""

    a_hz: float = Field(ge=200, le=3000)
    b_hz: float | None = Field(default=None, ge=200, le=3000)
    a_s: float | None = Field(default=None, ge=0.1, le=30)
    """Tone A's length: 1 s for a two-tone page, 8 s for a long tone, unless given."""
    b_s: float = Field(default=3.0, ge=0.1, le=30)

    @model_validator(mode="after")
    def _distinct(self) -> PageSection:
        if self.b_hz is not None and abs(self.b_hz / self.a_hz - 1.0) < 0.01:
            raise ValueError("a_hz and b_hz must differ by 1 % at least")
        return self

    @property
    def a_seconds(self) -> float:
        from gateway.dsp.twotone import default_a_s

        return self.a_s if self.a_s is not None else default_a_s(self.b_hz)


class ChannelSignallingSection(_Model):
    """Signalling decoded on a channel's audio: DTMF, 5-tone selcall, two-tone pages and
    MDC-1200."""

    dtmf: bool = True
    """DTMF (ITU-T Q.23/Q.24): `dtmf.digit` per digit, `dtmf.digits` when a string ends."""
    selcall: list[Literal["ccir", "zvei1", "eea"]] = Field(default_factory=list)
    """5-tone standards to read (none by default): `selcall.detected` per call."""
    selcall_min_digits: int = Field(default=5, ge=1, le=32)
    """Fewest tones that make a call (5 for the usual 5-tone addresses)."""
    mdc1200: bool = False
    """MDC-1200 bursts: `unit.id` per packet (PTT ID, post ID, status...), and
    `emergency.raised` for a unit's emergency; the channel's state shows the last unit."""
    pages: dict[str, PageSection] = Field(default_factory=dict)
    """Two-tone pages to listen for, by name (`page.detected` names it), and to send
    (`page` request): e.g. `"Station 1" = { a_hz = 321.7, b_hz = 339.6 }`."""
    page_tolerance_pct: float = Field(default=1.5, ge=0.2, le=5)
    """How far a heard tone may be from the configured one, percent."""
    tx_delay_ms: float = Field(default=300.0, ge=0, le=3000)
    """Sending (`selcall`, `dtmf` requests): from keying the radio to the first tone, for
    the transmitter (and a repeater) to come up."""
    tx_level_dbfs: float = Field(default=-10.0, ge=-40, le=-6.5)
    """Each tone's peak level when sending (a DTMF pair peaks 6 dB higher)."""
    output_device: Identifier | None = None
    """Audio device the tones play on; by default the channel's capture device."""
    output_column: int | None = Field(default=None, ge=0, le=31)
    """Column they play on; by default the channel's capture column."""

    @field_validator("selcall")
    @classmethod
    def _no_twice(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("names a standard twice")
        return value


class AudioSection(_Model):
    devices: dict[Identifier, AudioDeviceSection] = Field(default_factory=dict)


class ChannelSection(_Model):
    name: str = ""
    radio: RadioSection | None = None
    audio: ChannelAudioSection | None = None
    tty: ChannelTtySection | None = None
    signalling: ChannelSignallingSection | None = None
    tx_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    """Every transmission ends after this, whatever the requester does."""
    max_lease_s: float = Field(default=30.0, gt=0, le=3600)
    """Longest PTT a single request may hold without renewing it."""
    tx_timeout_reset_s: float = Field(default=5.0, gt=0, le=3600)
    """After a time-out, the channel keys again only after `ptt off` or this long with no
    PTT request at all: renewals in between are refused and restart this wait."""
    busy_lockout: bool = False
    """Refuse PTT while carrier (COS) is present."""
    busy_when_cos_unknown: bool = True
    """With busy_lockout, refuse PTT while COS is unknown too (the interface has not reported
    the carrier yet: fault `cos_unknown`). False keys a channel whose carrier is unknown."""
    cos_debounce_ms: float = Field(default=30.0, ge=0, le=2000)
    cos_stuck_s: float = Field(default=300.0, gt=0)
    cos_flap_max: int = Field(default=10, ge=2)
    """COS transitions within cos_flap_window_s that count as flapping."""
    cos_flap_window_s: float = Field(default=2.0, gt=0)
    poll_ms: float = Field(default=20.0, ge=2, le=1000)
    reopen_backoff_max_s: float = Field(default=5.0, ge=0.1)

    @model_validator(mode="after")
    def _lease_within_timeout(self) -> ChannelSection:
        if self.max_lease_s > self.tx_timeout_s:
            raise ValueError("max_lease_s must not exceed tx_timeout_s")
        return self


class ModbusLinkSection(_Model):
    """One physical connection: a Modbus TCP endpoint or an RS-485 line (RTU)."""

    host: HostName | None = None
    port: int = Field(default=502, ge=1, le=65535)
    serial_port: str | None = None
    """RTU: the serial device of the RS-485 line, e.g. /dev/serial/by-id/..."""
    baudrate: int = Field(default=9600, ge=300, le=921_600)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    timeout_s: float = Field(default=0.3, gt=0, le=10)
    """Reply timeout: a dead module is noticed within a few of these."""

    @model_validator(mode="after")
    def _one_transport(self) -> ModbusLinkSection:
        if (self.host is None) == (self.serial_port is None):
            raise ValueError("set host (Modbus TCP) or serial_port (RTU), exactly one")
        return self


class ModbusModuleSection(_Model):
    link: Identifier
    device_id: int = Field(default=1, ge=0, le=247)
    preset: Literal["generic", "adam6050", "adam6060", "e1210", "e1212", "ed538"] = "generic"
    poll_ms: float = Field(default=100.0, ge=10, le=60_000)
    offline_after_misses: int = Field(default=3, ge=1, le=100)
    """Consecutive failed polls before module.offline is raised."""
    use_di_word: bool = False
    """Read all inputs with the module's bitmask register (one request) where it has one."""
    outputs: dict[Identifier, int] = Field(default_factory=dict)
    """Relay outputs by name -> output channel, for the set_output request."""


LineStateName = Literal["normal", "alarm", "trouble_open", "trouble_short"]


class AlarmSection(_Model):
    module: Identifier
    channel: int = Field(ge=0, le=255)
    """Digital input channel (kind digital) or analog input channel (kind supervised)."""
    name: str = ""
    priority: Literal["critical", "high", "medium", "low"] = "high"
    kind: Literal["digital", "supervised"] = "digital"
    contact: Literal["normally_open", "normally_closed"] = "normally_open"
    """Digital: normally_open alarms when the input closes, normally_closed when it opens."""
    debounce_ms: float = Field(default=200.0, ge=0, le=60_000)
    latched: bool = False
    """A latched alarm stays active after the input restores, until acknowledged."""
    nominal: dict[LineStateName, float] | None = None
    """Supervised: what the analog input reads in each state, e.g. {normal = 2500, ...}."""
    hysteresis_fraction: float = Field(default=0.1, ge=0, lt=0.25)

    @model_validator(mode="after")
    def _supervised_needs_nominals(self) -> AlarmSection:
        if self.kind == "supervised":
            if not self.nominal or "normal" not in self.nominal or "alarm" not in self.nominal:
                raise ValueError("kind supervised needs nominal values for normal and alarm")
        elif self.nominal is not None:
            raise ValueError("nominal is for kind = supervised only")
        return self


class ModbusSection(_Model):
    links: dict[Identifier, ModbusLinkSection] = Field(default_factory=dict)
    modules: dict[Identifier, ModbusModuleSection] = Field(default_factory=dict)


class MetricsSection(_Model):
    enabled: bool = False
    """Serve Prometheus metrics over HTTP (off by default)."""
    host: HostName = "127.0.0.1"
    port: int = Field(default=9108, ge=1, le=65535)


class RecorderSection(_Model):
    """The logging recorder: every transmission on every audio channel (a channel's
    `audio.record = false` leaves it out), indexed in SQLite under `folder`."""

    enabled: bool = True
    folder: str = ""
    """Where recordings and their index go; empty: <gateway.state_dir>/recordings."""
    format: Literal["opus", "flac"] = "opus"
    """opus: Ogg/Opus, speech-grade (about 110 kB per audio minute at 16 kbit/s); flac:
    lossless, about 8 times that at 8 kHz."""
    opus_kbps: float = Field(default=16.0, ge=6, le=64)
    """The Opus bitrate: 16 kbit/s is transparent for radio speech at 8 kHz."""
    pre_roll_s: float = Field(default=1.0, ge=0, le=30)
    """Audio kept from before the carrier or PTT came (a word's start, a late COS)."""
    hang_s: float = Field(default=2.0, ge=0, le=60)
    """A transmission back within this continues the record (an exchange of overs)."""
    max_s: float = Field(default=600.0, ge=10, le=86_400)
    """A longer record is split here (a stuck carrier does not make one endless file)."""
    max_age_days: float = Field(default=0.0, ge=0, le=36_500)
    """Records older than this are deleted, oldest first (0: kept, within the quota)."""
    quota_mb: float = Field(default=0.0, ge=0)
    """Records beyond this much disk are deleted, oldest first (0: no quota)."""
    low_disk_mb: float = Field(default=1000.0, ge=0)
    """A `recorder_low_disk` fault on every recorded channel while less is free (0: never)."""
    flush_s: float = Field(default=1.0, gt=0, le=60)
    """How often an open record's file is flushed: a crash loses at most this much."""


class Config(_Model):
    gateway: GatewaySection = GatewaySection()
    mqtt: MqttSection = MqttSection()
    outbox: OutboxSection = OutboxSection()
    channels: dict[Identifier, ChannelSection] = Field(default_factory=dict)
    audio: AudioSection = AudioSection()
    modbus: ModbusSection = ModbusSection()
    alarms: dict[Identifier, AlarmSection] = Field(default_factory=dict)
    metrics: MetricsSection = MetricsSection()
    recorder: RecorderSection = RecorderSection()

    source: Path | None = Field(default=None, exclude=True)

    @property
    def prefix(self) -> str:
        return self.mqtt.prefix or f"consolegw/{self.gateway.id}"


def _printable(text: str) -> str:
    """User text in a message, on one line: what the terminal would not show is escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _key(part: int | str) -> str:
    """A key as TOML writes it: bare when it can be, else quoted."""
    text = str(part)
    if re.fullmatch(r"[A-Za-z0-9_-]+", text):
        return text
    return '"' + _printable(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


def _format_location(loc: tuple[int | str, ...], model_path: tuple[str, ...] = ()) -> str:
    # pydantic puts the union member's tag into channels.ID.radio.TAG...; no user wrote it.
    is_tag = len(loc) > 3 and loc[0] == "channels" and loc[2] == "radio"
    parts = [_key(p) for i, p in enumerate(loc) if not (is_tag and i == 3)]
    return ".".join([*model_path, *parts]) or "(top level)"


def _validation_message(path: Path, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = _format_location(tuple(err["loc"]))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (typo?)"
        elif msg.startswith("Value error, "):
            msg = msg.removeprefix("Value error, ")
        lines.append(f"{path}: {key}: {_printable(msg)}")
    return "\n".join(lines)


_PATH_KEYS = (
    ("gateway", "state_dir"),
    ("recorder", "folder"),
    ("mqtt", "password_file"),
    ("mqtt", "tls", "ca_file"),
    ("mqtt", "tls", "cert_file"),
    ("mqtt", "tls", "key_file"),
)


def _resolve_relative_paths(data: dict[str, Any], source: Path) -> dict[str, Any]:
    """Relative paths in a config file mean: next to that file, wherever we run from."""
    try:
        base = source.resolve().parent
    except (OSError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"{source}: cannot resolve the file's folder: {exc}") from None
    for keys in _PATH_KEYS:
        node: Any = data
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if not (isinstance(node, dict) and isinstance(node.get(keys[-1]), str)):
            continue  # absent, or not a string: validation names the problem
        raw: str = node[keys[-1]]
        if not raw and keys == ("recorder", "folder"):
            continue  # empty: the default (under state_dir), not the config's own folder
        where = f"{source}: {'.'.join(keys)}"
        if "\0" in raw:
            raise ConfigError(f"{where}: contains a NUL character")
        try:
            value = Path(raw).expanduser()
            if not value.is_absolute():
                node[keys[-1]] = str((base / value).resolve())
        except RuntimeError as exc:  # "~nobody/x" with no such user; a symlink loop
            raise ConfigError(f"{where}: cannot resolve {raw!r}: {exc}") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{where}: cannot resolve {raw!r}: {exc}") from None
    return data


def parse_config(data: dict[str, Any], *, source: Path, check_files: bool = True) -> Config:
    """Validate an already parsed TOML document (and that the files it names exist)."""
    if "source" in data:  # a field of ours, set from the file's path, never from the file
        raise ConfigError(f"{source}: source: unknown key (typo?)")
    data = _resolve_relative_paths(data, source)
    try:
        config = Config.model_validate({**data, "source": source})
    except ValidationError as exc:
        raise ConfigError(_validation_message(source, exc)) from None
    _check_references(config, source)
    if check_files:
        _check_files(config, source)
    _check_whole(data, config, source)
    return config


def _check_whole(data: dict[str, Any], config: Config, source: Path) -> None:
    """What no single section can see: an id left to chance, an empty file, a shared port."""
    gateway = data.get("gateway")
    if not isinstance(gateway, dict) or "id" not in gateway:
        raise ConfigError(
            f"{source}: gateway.id: required: each console needs an id of its own (it names "
            'the MQTT topics; two consoles with one id overwrite each other), e.g. id = "pos-04"'
        )
    configured = config.channels or config.alarms or config.modbus.modules
    if config.gateway.standby and configured:
        # Refused rather than ignored: whoever set standby does not expect radios keyed.
        raise ConfigError(
            f"{source}: gateway.standby: true, but channels, alarm inputs or Modbus modules "
            "are configured: remove standby to run them (or remove them to stay in standby)"
        )
    if not (configured or config.gateway.standby):
        raise ConfigError(
            f"{source}: (top level): nothing to run: no [channels.<id>], [alarms.<id>] or "
            "[modbus.modules.<id>] table (see config/example.toml); while the console is "
            "being installed, gateway.standby = true runs it with none"
        )
    taken: dict[str, str] = {}
    for channel_id, channel in config.channels.items():
        radio = channel.radio
        claim = kind_of(radio).claims(radio) if radio is not None else None
        if claim is None:
            continue
        key, what = claim
        other = taken.setdefault(what, channel_id)
        if other != channel_id:
            raise ConfigError(
                f"{source}: channels.{channel_id}.radio.{key}: {what} is channel {other}'s "
                "too: one radio interface serves one channel (give each radio its own)"
            )


def config_warnings(config: Config) -> list[str]:
    """Legal settings a technician should think twice about, as `FILE: KEY: why` lines."""
    warnings = []
    if config.gateway.standby:
        warnings.append(
            f"{config.source}: gateway.standby: true: this console runs no radio, sound card "
            "or alarm input until channels are configured and standby is removed"
        )
    for channel_id, channel in config.channels.items():
        if channel.radio is not None and channel.radio.ptt_invert:
            warnings.append(
                f"{config.source}: channels.{channel_id}.radio.ptt_invert: true keys the "
                "radio whenever the line is not driven (daemon stopped, crashed, cable or "
                "USB unplugged); use it only for an interface that needs it"
            )
        if channel.tty is not None and channel.tty.unshift_on_space is not None:
            warnings.append(
                f"{config.source}: channels.{channel_id}.tty.unshift_on_space: deprecated, "
                f'write shift = "{channel.tty.shift}" instead (or "auto", the default, to '
                "find each caller's convention from its signal)"
            )
    return warnings


def _check_references(config: Config, source: Path) -> None:
    """What one section names in another must exist (pydantic checks each on its own)."""
    from drivers.modbus_presets import preset

    for channel_id, channel_section in config.channels.items():
        audio = channel_section.audio
        if audio is None:
            continue
        where = f"{source}: channels.{channel_id}.audio"
        device = config.audio.devices.get(audio.device)
        if device is None:
            raise ConfigError(f"{where}.device: no device {audio.device!r} in [audio.devices]")
        if audio.column >= device.channels:
            raise ConfigError(
                f"{where}.column: device {audio.device} has {device.channels} channels "
                f"(columns 0-{device.channels - 1})"
            )
        opus_rates = (8000, 12000, 16000, 24000, 48000)
        recorded = config.recorder.enabled and audio.record
        if recorded and config.recorder.format == "opus" and device.samplerate not in opus_rates:
            raise ConfigError(
                f"{source}: audio.devices.{audio.device}.samplerate: {device.samplerate} Hz, "
                f'but recorder.format = "opus" takes {", ".join(map(str, opus_rates))} Hz: '
                'use one of those, or format = "flac", or record = false on the channel'
            )
        players = (("tty", channel_section.tty), ("signalling", channel_section.signalling))
        for key, plays in players:
            if plays is None or plays.output_device is None:
                continue
            out = config.audio.devices.get(plays.output_device)
            where = f"{source}: channels.{channel_id}.{key}"
            if out is None:
                raise ConfigError(
                    f"{where}.output_device: no device {plays.output_device!r} in [audio.devices]"
                )
            if plays.output_column is not None and plays.output_column >= out.channels:
                raise ConfigError(
                    f"{where}.output_column: {plays.output_device} has {out.channels} channels"
                )
    for channel_id, channel_section in config.channels.items():
        for key, section, what in (
            ("tty", channel_section.tty, "TTY"),
            ("signalling", channel_section.signalling, "Signalling"),
        ):
            if section is not None and channel_section.audio is None:
                raise ConfigError(
                    f"{source}: channels.{channel_id}.{key}: {what} needs the channel's audio "
                    f"([channels.{channel_id}.audio])"
                )
        audio = channel_section.audio
        if channel_section.signalling is not None and audio is not None:
            rate = config.audio.devices[audio.device].samplerate
            if rate < 6000:  # gateway.dsp's decoders need 6 kHz (DTMF's 1633 Hz and guard)
                raise ConfigError(
                    f"{source}: channels.{channel_id}.signalling: audio.devices."
                    f"{audio.device}.samplerate is {rate} Hz; signalling needs 6000 at least"
                )
    modules = config.modbus.modules
    for module_id, module in modules.items():
        where = f"{source}: modbus.modules.{module_id}"
        if module.link not in config.modbus.links:
            raise ConfigError(f"{where}.link: no link {module.link!r} in [modbus.links]")
        model = preset(module.preset)
        for name, channel in module.outputs.items():
            if not 0 <= channel < len(model.outputs):
                raise ConfigError(
                    f"{where}.outputs.{name}: {model.model} has no output channel {channel} "
                    f"(it has {len(model.outputs)})"
                )
        if module.use_di_word and model.di_word is None:
            raise ConfigError(f"{where}.use_di_word: {model.model} has no input bitmask register")
    for alarm_id, alarm in config.alarms.items():
        where = f"{source}: alarms.{alarm_id}"
        owner = modules.get(alarm.module)
        if owner is None:
            raise ConfigError(f"{where}.module: no module {alarm.module!r} in [modbus.modules]")
        model = preset(owner.preset)
        count = len(model.digital_inputs if alarm.kind == "digital" else model.analog_inputs)
        if alarm.channel >= count:
            kind = "digital input" if alarm.kind == "digital" else "analog input"
            raise ConfigError(
                f"{where}.channel: {model.model} has no {kind} channel {alarm.channel} "
                f"(it has {count})"
            )


def _check_files(config: Config, source: Path) -> None:
    for keys in _PATH_KEYS:
        if keys in (("gateway", "state_dir"), ("recorder", "folder")):
            continue  # a directory, made when missing
        node: Any = config
        for key in keys:
            node = getattr(node, key) if node is not None else None
        if node is None:
            continue
        try:
            found = node.is_file()
        except OSError as exc:  # e.g. a name longer than the file system allows
            raise ConfigError(
                f"{source}: {'.'.join(keys)}: cannot check {_printable(str(node))}: {exc.strerror}"
            ) from None
        if not found:
            raise ConfigError(
                f"{source}: {'.'.join(keys)}: file not found: {_printable(str(node))} "
                "(put this console's file there, or remove the key)"
            )
    # What the daemon reads as it starts, read now: a problem is the config's, named here.
    try:
        read_password(config.mqtt)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    _check_tls(config.mqtt, source)


def _check_tls(mqtt: MqttSection, source: Path) -> None:
    """Load the TLS files as the daemon will (gateway.mqtt.build_tls_context)."""
    tls = mqtt.tls
    if tls is None:
        return
    import ssl

    try:
        context = ssl.create_default_context(cafile=None if tls.ca_file is None else tls.ca_file)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ConfigError(f"{source}: mqtt.tls.ca_file: not a usable CA file: {exc}") from None
    if tls.cert_file is not None:
        try:
            # An encrypted key cannot be used unattended: fail, do not prompt for it.
            context.load_cert_chain(tls.cert_file, tls.key_file, password=lambda: b"")
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"{source}: mqtt.tls.cert_file: cannot load the certificate and its key "
                f"(an unencrypted PEM key is needed): {exc}"
            ) from None


_MAX_FILE_BYTES = 4 * 2**20
"""A config file is a few kB; this bound keeps `check-config /dev/zero` from eating memory."""


def load_config(path: str | Path, *, check_files: bool = True) -> Config:
    """Read and validate a config file. Raises ConfigError naming file, key and problem."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(_MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:  # a NUL in the name: no file has one
        raise ConfigError(f"{str(path)!r}: cannot read: {exc}") from None
    if len(raw) > _MAX_FILE_BYTES:
        raise ConfigError(f"{path}: larger than {_MAX_FILE_BYTES // 2**20} MiB: not a config file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{path}: not valid TOML: not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line})"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: arrays or tables nested too deeply") from None
    except ValueError as exc:  # an integer of more than 4300 digits (int's own limit)
        raise ConfigError(f"{path}: not valid TOML: {str(exc).split(';')[0]}") from None
    return parse_config(data, source=path, check_files=check_files)


def read_password(mqtt: MqttSection) -> str | None:
    """The broker password, from password_file when set. Raises ConfigError naming the key."""
    if mqtt.password_file is None:
        return mqtt.password
    where = f"mqtt.password_file: {mqtt.password_file}"
    try:
        password = mqtt.password_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, ValueError):
        raise ConfigError(f"{where}: not UTF-8 text") from None
    if len(password.encode("utf-8", "surrogatepass")) > 65_535:
        raise ConfigError(f"{where}: longer than 65535 bytes (the MQTT limit)")
    return password
