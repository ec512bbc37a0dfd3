"""Register maps of common Modbus IO modules, as inputs for `drivers.modbus_io.InputMap`.

All addresses are 0-based protocol addresses (Modicon 00017 = coil 16, 30049 = input
register 48). Each preset names its source and says what could not be confirmed; check
`notes` before trusting a detail, and check a real module before deployment (vendors
change maps between firmware versions, and DIO channels follow their configured mode).

Counter word order differs by vendor and is recorded per preset: Advantech ADAM-6000 puts
the LOW word first, Moxa ioLogik E1200 the HIGH word first, Brainboxes ED uses one 16-bit
register per counter (no word order).

Sources (public manuals, read through stored copies):
- Advantech "ADAM-6000 Series User Manual", appendix B (I/O Modbus mapping tables); the
  counter formula "(40002) x 65536 + (40001)" as quoted from edition 9 for the ADAM-6000 DI
  modules. Field code reading ADAM-6050 inputs with function 2 at address 0 (SecPi).
- Moxa "ioLogik E1200 Series User's Manual", appendix A (Modbus/TCP default address
  mappings), E1210 and E1212 tables.
- Brainboxes "ED Modbus product data tables" (docs.brainboxes.com, reference/protocols).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

from drivers.modbus_io import (
    AnalogPoint,
    BitPoint,
    BitTable,
    CounterPoint,
    InputMap,
    Point,
    RegisterBitPoint,
    RegisterTable,
    WordOrder,
)

__all__ = ["PRESETS", "ModulePreset", "generic_preset", "preset"]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class ModulePreset:
    """One module model: where its channels are, and what is known about them.

    Channel n of each kind is index n of the tuples. Point names default to "di<n>",
    "ai<n>", "count<n>" and "do<n>" (output read-back); `input_map()` renames them.
    """

    key: str
    model: str
    source: str
    digital_inputs: tuple[BitPoint, ...]
    """One bit per input channel, read with function 1 or 2."""
    di_word: tuple[RegisterTable, int] | None = None
    """A register holding every input as a bitmask (bit n = channel n), when the module has
    one: `input_map(use_di_word=True)` reads the inputs with that single register."""
    outputs: tuple[int, ...] = ()
    """Coil address of each relay/digital output channel, for ModbusModule.write_coil()."""
    counters: tuple[CounterPoint, ...] = ()
    analog_inputs: tuple[AnalogPoint, ...] = ()
    notes: tuple[str, ...] = ()
    """Details not confirmed from the source, and other cautions."""

    @property
    def counter_word_order(self) -> WordOrder | None:
        """None when counters are one 16-bit register each (or absent)."""
        if not self.counters or self.counters[0].words == 1:
            return None
        return self.counters[0].word_order

    def input_map(
        self,
        *,
        inputs: Mapping[str, int] | None = None,
        analogs: Mapping[str, int] | None = None,
        counters: Mapping[str, int] | None = None,
        outputs: Mapping[str, int] | None = None,
        use_di_word: bool = False,
    ) -> InputMap:
        """An InputMap for the named channels (name -> channel number).

        With no argument at all: every digital input, named di0, di1...
        `outputs` reads the relays' state back as coils.
        """
        if inputs is None and analogs is None and counters is None and outputs is None:
            inputs = {f"di{n}": n for n in range(len(self.digital_inputs))}
        points: list[Point] = []
        for name, ch in (inputs or {}).items():
            bit = _pick(self.digital_inputs, ch, "digital input", self.model)
            if use_di_word:
                if self.di_word is None:
                    raise ValueError(f"{self.model} has no input bitmask register")
                if ch > 15:
                    raise ValueError(f"channel {ch} is beyond the 16-bit input word")
                table, address = self.di_word
                points.append(RegisterBitPoint(name, table, address, ch))
            else:
                points.append(BitPoint(name, bit.table, bit.address))
        for name, ch in (analogs or {}).items():
            a = _pick(self.analog_inputs, ch, "analog input", self.model)
            points.append(AnalogPoint(name, a.table, a.address, a.scale, a.offset, a.signed))
        for name, ch in (counters or {}).items():
            c = _pick(self.counters, ch, "counter", self.model)
            points.append(CounterPoint(name, c.table, c.address, c.words, c.word_order))
        for name, ch in (outputs or {}).items():
            address = _pick(self.outputs, ch, "output", self.model)
            points.append(BitPoint(name, "coil", address))
        return InputMap(points=points)


def _pick(items: tuple[_T, ...], channel: int, what: str, model: str) -> _T:
    if isinstance(channel, bool) or not isinstance(channel, int):
        raise ValueError(f"{what} channel must be an int, got {channel!r}")
    if not 0 <= channel < len(items):
        raise ValueError(f"{model} has no {what} channel {channel} (it has {len(items)})")
    return items[channel]


def _bits(table: BitTable, base: int, count: int) -> tuple[BitPoint, ...]:
    return tuple(BitPoint(f"di{n}", table, base + n) for n in range(count))


def _counters(
    table: RegisterTable, base: int, count: int, words: Literal[1, 2], order: WordOrder
) -> tuple[CounterPoint, ...]:
    return tuple(
        CounterPoint(f"count{n}", table, base + n * words, words, order) for n in range(count)
    )


def generic_preset(
    *,
    di_count: int = 16,
    di_table: BitTable = "discrete_input",
    di_address: int = 0,
    di_word: tuple[RegisterTable, int] | None = None,
    do_count: int = 0,
    do_address: int = 0,
    ai_count: int = 0,
    ai_table: RegisterTable = "input_register",
    ai_address: int = 0,
    ai_scale: float = 1.0,
    ai_offset: float = 0.0,
) -> ModulePreset:
    """A preset for any module laid out in plain blocks (the common case for RTU modules)."""
    if not 0 <= di_count <= 2000 or not 0 <= do_count <= 2000 or not 0 <= ai_count <= 125:
        raise ValueError("channel counts out of range")
    return ModulePreset(
        key="generic",
        model="generic Modbus IO module",
        source="user supplied layout",
        digital_inputs=_bits(di_table, di_address, di_count),
        di_word=di_word,
        outputs=tuple(do_address + n for n in range(do_count)),
        analog_inputs=tuple(
            AnalogPoint(f"ai{n}", ai_table, ai_address + n, ai_scale, ai_offset)
            for n in range(ai_count)
        ),
    )


_ADAM_SOURCE = "Advantech ADAM-6000 Series User Manual, appendix B (I/O Modbus mapping)"
_ADAM_NOTES = (
    "Inputs are read as coils (function 1, manual address 0X 00001..); function 2 at the "
    "same addresses is reported to work too.",
    "Counters (holding 40001.., two registers per channel, LOW word first) count only on "
    "channels set to counter mode; the per-model counter range is inferred from the "
    "ADAM-6000 layout, not read from this model's table.",
    "40301 (holding 300) holds the inputs as a bitmask, 40303 (holding 302) the outputs "
    "(ADAM-6000/4100 layout; not confirmed for this model's firmware).",
)
_MOXA_SOURCE = "Moxa ioLogik E1200 Series User's Manual, appendix A (Modbus/TCP mappings)"

PRESETS: dict[str, ModulePreset] = {
    "generic": generic_preset(di_count=16, di_word=("input_register", 16), do_count=8, ai_count=8),
    "adam6050": ModulePreset(
        key="adam6050",
        model="Advantech ADAM-6050 (12 DI, 6 DO)",
        source=_ADAM_SOURCE,
        digital_inputs=_bits("coil", 0, 12),
        di_word=("holding_register", 300),
        outputs=tuple(16 + n for n in range(6)),  # 00017..00022
        counters=_counters("holding_register", 0, 12, 2, "low_first"),
        notes=_ADAM_NOTES,
    ),
    "adam6060": ModulePreset(
        key="adam6060",
        model="Advantech ADAM-6060 (6 DI, 6 relays)",
        source=_ADAM_SOURCE,
        digital_inputs=_bits("coil", 0, 6),
        di_word=("holding_register", 300),
        outputs=tuple(16 + n for n in range(6)),  # 00017..00022
        counters=_counters("holding_register", 0, 6, 2, "low_first"),
        notes=_ADAM_NOTES,
    ),
    "e1210": ModulePreset(
        key="e1210",
        model="Moxa ioLogik E1210 (16 DI)",
        source=_MOXA_SOURCE,
        digital_inputs=_bits("discrete_input", 0, 16),  # 10001..10016
        di_word=("input_register", 0x30),  # 30049, bit n = channel n
        counters=_counters("input_register", 0x10, 16, 2, "high_first"),  # 30017.., Hi word
        notes=("Counters count only on channels set to counter mode.",),
    ),
    "e1212": ModulePreset(
        key="e1212",
        model="Moxa ioLogik E1212 (8 DI + 8 DIO)",
        source=_MOXA_SOURCE,
        # DI 0-7 and the DIO channels (as inputs) 8-15: 10001..10016.
        digital_inputs=_bits("discrete_input", 0, 16),
        di_word=("input_register", 0x30),
        outputs=tuple(range(8)),  # DIO channels as outputs: coils 00001..00008
        counters=_counters("input_register", 0x10, 16, 2, "high_first"),
        notes=(
            "DI channels 8-15 are the DIO channels; they read as inputs only in DI mode, and "
            "the coils drive them only in DO mode (set with the module's web page).",
            "The manual's E1212 register table (counters 30017.., DI word 30049) lists "
            "channels 0-5 only in the copy read (apparently copied from another model); "
            "counters for 16 channels and a 16-bit DI word are assumed, as on the E1210.",
        ),
    ),
    "ed538": ModulePreset(
        key="ed538",
        model="Brainboxes ED-538 (8 DI, 4 relays)",
        source="Brainboxes ED Modbus product data tables (docs.brainboxes.com)",
        digital_inputs=_bits("discrete_input", 0, 8),  # 10001..10008
        di_word=("input_register", 0x20),  # 30033
        outputs=tuple(range(4)),  # coils 00001..00004
        counters=_counters("input_register", 0, 8, 1, "high_first"),  # 30001.., 16-bit
        notes=(
            "The ED-538 rows of the table were cut off in the copy read: addresses follow "
            "the ED-588/ED-516 rows of the same table (DI function 2 at 0x0000, DI word "
            "input register 0x0020, one counter register per channel at 0x0000, outputs "
            "as coils at 0x0000 and holding register 0x0020).",
        ),
    ),
}


def preset(key: str) -> ModulePreset:
    """The preset called `key` (generic, adam6050, adam6060, e1210, e1212, ed538)."""
    try:
        return PRESETS[key]
    except KeyError:
        raise ValueError(f"unknown module preset {key!r}; known: {sorted(PRESETS)}") from None
