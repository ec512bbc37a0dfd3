"""The `modbus` check: each configured Modbus IO module answers one poll."""

from __future__ import annotations

from typing import Any

from gateway.tools.diag.core import CheckResult, DiagContext, register_check


async def check_modbus(ctx: DiagContext) -> list[CheckResult]:
    assert ctx.config is not None
    from drivers.modbus_io import ModbusLink, ModbusModule, Snapshot
    from drivers.modbus_presets import preset
    from gateway.alarms import modbus_link

    links: dict[str, ModbusLink] = {}
    results = []
    try:
        for module_id, section in ctx.config.modbus.modules.items():
            if not ctx.wanted(module_id):
                continue
            link = links.get(section.link)
            if link is None:
                link = links[section.link] = modbus_link(ctx.config.modbus.links[section.link])
            model = preset(section.preset)
            if model.digital_inputs:
                input_map = model.input_map()
            elif model.analog_inputs:
                input_map = model.input_map(
                    analogs={f"ai{n}": n for n in range(len(model.analog_inputs))}
                )
            else:
                results.append(CheckResult("modbus", module_id, "SKIP", "preset has no inputs"))
                continue
            ctx.progress(f"modbus: polling {module_id}")
            module = ModbusModule(link=link, device_id=section.device_id)
            result = await module.poll(input_map)
            data: dict[str, Any] = {
                "where": module.description,
                "model": model.model,
                "duration_ms": round(result.duration_s * 1000, 1),
            }
            if isinstance(result, Snapshot):
                data["values"] = dict(result.values)
                closed = [k for k, v in result.values.items() if v is True]
                detail = (
                    f"{model.model} answered in {data['duration_ms']:g} ms: "
                    f"{len(result.values)} inputs, closed: {', '.join(closed) or 'none'}"
                )
                results.append(CheckResult("modbus", module_id, "PASS", detail, data))
            else:
                results.append(
                    CheckResult(
                        "modbus",
                        module_id,
                        "FAIL",
                        f"no valid answer from {module.description}: {result.error}",
                        data,
                    )
                )
    finally:
        for link in links.values():
            await link.close()
    if not results and not ctx.config.modbus.modules:
        results.append(CheckResult("modbus", "-", "SKIP", "no Modbus modules configured"))
    return results


register_check("modbus", "each configured Modbus IO module answers one poll", check_modbus)
