"""Which int8 types suit a target's CPU: the activation/weight types and `reduce_range` of ONNX
Runtime static (and dynamic) int8, chosen per target with the reason.

ONNX Runtime's CPU guidance (`quantize_static` docstring): x86 uint8 activations with int8
weights, 7-bit weights (`reduce_range`) only without VNNI (the u8s8 VPMADDUBSW path can
saturate); Arm int8/int8 with symmetric activations. A target emulated on a host of another
architecture gets the host's types, because that is where it is measured (s8 activations ran
2.5x slower than u8 on x86).

The CPU comes from the target (`Target.arch` / `Target.isa`, declared in its profile or detected
on this host by `advisor.measure.host`); ISA detection lives there and nowhere else.
"""
from __future__ import annotations

from typing import Any

from advisor.measure.host import arch_family, detect_cpu, has_vnni
from advisor.targets import arch_from_name

__all__ = ["host_cpu", "target_cpu", "choose_int8_types", "quant_type"]


def host_cpu() -> dict[str, Any]:
    """This host's CPU family ("x86"/"arm") and ISA names (`advisor.measure.host.detect_cpu`)."""
    return {"arch": arch_family(), "flags": set(detect_cpu()["isa"])}


def target_cpu(target: Any) -> dict[str, Any]:
    """The CPU the target deploys to: its declared arch/ISA (`Target.cpu_source` "profile" or
    "name"), else this host. Objects without `arch` (plain namespaces) are read the same way,
    with the target's name deciding Arm (`advisor.targets.arch_from_name`)."""
    host = host_cpu()
    if target is None:
        return {**host, "source": "host"}
    flags = set(getattr(target, "isa", ()) or ())
    arch = getattr(target, "arch", None)
    if arch is None:
        arch = arch_from_name(getattr(target, "name", ""))
    if arch is None or getattr(target, "cpu_source", None) == "host":
        return {**host, "flags": flags or host["flags"], "source": "host"}
    arch = str(arch).lower()
    emulated = bool(getattr(target, "emulated", False)) and arch != host["arch"]
    return {"arch": arch, "flags": flags, "source": "target",
            "emulated_on": host if emulated else None}


def choose_int8_types(target: Any, activation: str = "auto", weight: str = "auto",
                      reduce_range: bool | None = None) -> dict[str, Any]:
    """Activation/weight types and reduce_range for static int8 on `target`, with the reason.

    Follows ONNX Runtime's guidance for CPU inference (quantize_static docstring): x86 u8 activations
    with s8 weights, reduce_range only without VNNI; Arm s8/s8 with symmetric activations.
    """
    cpu = target_cpu(target)
    note = ""
    if cpu.get("emulated_on"):
        # the artefact is measured on this host: s8 activations ran 2.5x slower than u8 on x86
        # here (ResNet 224 px: 25.6 vs 10.2 ms), which would misreport int8 for the device
        note = (f" (target emulated on this {cpu['emulated_on']['arch']} host: types chosen for "
                f"the host; ONNX Runtime's Arm kernels run u8/s8 too)")
        cpu = {**cpu["emulated_on"], "source": "host (emulation)"}
    vnni = has_vnni(cpu["flags"])
    if cpu["arch"] == "arm":
        auto = {"activation": "int8", "weight": "int8", "reduce_range": False,
                "activation_symmetric": True,
                "reason": "Arm: s8 activations (symmetric) and s8 weights suit the Arm int8 kernels"}
    elif vnni:
        auto = {"activation": "uint8", "weight": "int8", "reduce_range": False,
                "activation_symmetric": False,
                "reason": "x86 with VNNI: u8 activations, s8 weights; VNNI accumulates without "
                          "saturation, so full 8-bit weights"}
    else:
        auto = {"activation": "uint8", "weight": "int8", "reduce_range": True,
                "activation_symmetric": False,
                "reason": "x86 without VNNI: u8 activations, s8 weights with 7-bit range "
                          "(reduce_range) against VPMADDUBSW saturation"}
    auto["reason"] += note
    out = dict(auto)
    if activation != "auto":
        out["activation"] = activation
        out["activation_symmetric"] = False
    if weight != "auto":
        out["weight"] = weight
    if reduce_range is not None:
        out["reduce_range"] = bool(reduce_range)
    if (activation, weight, reduce_range) != ("auto", "auto", None):
        out["reason"] = "set in the config; per-target default: " + auto["reason"]
    out.update(arch=cpu["arch"], vnni=vnni, cpu_source=cpu["source"])
    return out


def quant_type(name: str):
    """ONNX Runtime's QuantType for "uint8" / "int8"."""
    from onnxruntime.quantization import QuantType

    return {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[name]
