"""What this machine sees: the radio interfaces of every kind (each kind's own lister, from
gateway.radios.KINDS), the sound cards, and the configured Modbus IO modules."""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from typing import Any

from drivers.errors import DeviceError
from gateway.config import Config


@dataclass
class Inventory:
    radios: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Each radio kind's devices under its report key (serial_ports, usb_interfaces...), in
    the order of gateway.radios.KINDS."""
    audio_devices: list[dict[str, Any]] = field(default_factory=list)
    modbus_modules: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What could not be listed, and why."""

    def as_json(self) -> dict[str, Any]:
        """As the report shows it: each kind's key beside audio_devices, modbus_modules."""
        return {
            **self.radios,
            "audio_devices": self.audio_devices,
            "modbus_modules": self.modbus_modules,
            "notes": self.notes,
        }


def list_audio_devices(notes: list[str]) -> list[dict[str, Any]]:
    try:
        from drivers import audio

        devices = audio.list_devices()
    except (OSError, ImportError, DeviceError) as exc:
        notes.append(f"audio: PortAudio not available: {exc}")
        return []
    return [asdict(d) for d in devices]


def list_modbus_modules(config: Config | None) -> list[dict[str, Any]]:
    if config is None:
        return []
    from drivers.modbus_presets import preset

    rows = []
    for module_id, module in config.modbus.modules.items():
        link = config.modbus.links[module.link]
        where = (
            f"tcp {link.host}:{link.port}"
            if link.host is not None
            else f"rtu {link.serial_port} {link.baudrate}"
        )
        rows.append(
            {
                "module": module_id,
                "link": module.link,
                "where": where,
                "device_id": module.device_id,
                "model": preset(module.preset).model,
                "alarms": sorted(a for a, s in config.alarms.items() if s.module == module_id),
            }
        )
    return rows


async def take_inventory(config: Config | None) -> Inventory:
    from gateway.radios import KINDS

    inventory = Inventory()
    for kind in KINDS.values():
        if kind.inventory is not None:
            inventory.radios[kind.report_key] = await asyncio.to_thread(
                kind.inventory, config, inventory.notes
            )
    inventory.audio_devices = await asyncio.to_thread(list_audio_devices, inventory.notes)
    inventory.modbus_modules = list_modbus_modules(config)
    return inventory
