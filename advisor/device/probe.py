"""`advisor targets probe`: connect to a device, fingerprint it, and write its target profile.

What the profile says is derived from the fingerprint, each choice with its reason in `notes`:
- precisions: fp32 always; int8 only where the CPU has fast int8 dot products — on x86 the
  VNNI/AMX instructions, or AVX2's VPMADDUBSW that ONNX Runtime's u8s8 kernels use; on Arm the
  dot-product extension (asimddp, ARMv8.2) or i8mm. Without them an int8 model is mostly
  widening multiplies and often no faster than fp32, so it is not proposed. fp16/bf16 are not
  listed: ONNX Runtime's CPU provider runs few of their kernels natively.
- threads: the cores the agent may use there (its affinity).
- sparse kernels: none (CSR layers run in torch, which the device need not have).
- runtimes: onnxruntime (CPUExecutionProvider): what the agent measures.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from advisor.device.link import DeviceLink
from advisor.measure.host import ISA_NAMES, arch_family

INT8_X86 = ("avx512_vnni", "avx_vnni", "amx_int8")
INT8_ARM = ("asimddp", "i8mm")


def derive_profile(name: str, fp: dict[str, Any], device_table: dict[str, Any]
                   ) -> dict[str, Any]:
    """The profile's fields from a fingerprint (`agent fingerprint`) and the `[device]` table."""
    arch = arch_family(str(fp.get("arch") or ""))
    isa = [f for f in fp.get("isa") or [] if f in ISA_NAMES]
    notes = [f"Probed {datetime.now(timezone.utc).date().isoformat()} over "
             f"{'SSH' if 'ssh' in device_table else 'a command'}: {fp.get('cpu_model') or '?'}, "
             f"{fp.get('cores_available') or '?'} core(s), {fp.get('memory_mb') or '?'} MB, "
             f"{fp.get('os') or '?'}, onnxruntime {fp.get('onnxruntime') or '?'}."]
    precisions = ["fp32"]
    if arch == "x86":
        fast = [f for f in INT8_X86 if f in isa]
        if fast:
            precisions.append("int8")
            notes.append(f"int8: the CPU has int8 dot products ({', '.join(fast)}).")
        elif "avx2" in isa:
            precisions.append("int8")
            notes.append("int8: no VNNI, but AVX2's VPMADDUBSW int8 multiply-adds, which ONNX "
                         "Runtime's u8s8 kernels use (gains are smaller than with VNNI).")
        else:
            notes.append("no int8: the CPU has neither VNNI nor AVX2 int8 multiply-adds.")
    elif arch == "arm":
        fast = [f for f in INT8_ARM if f in isa]
        if fast:
            precisions.append("int8")
            notes.append(f"int8: the CPU has int8 dot products ({', '.join(fast)}).")
        else:
            notes.append("no int8: the CPU lacks the dot-product extension (asimddp, ARMv8.2+), "
                         "so an int8 model is widening multiplies, often no faster than fp32.")
    else:
        notes.append(f"no int8: unknown CPU family {fp.get('arch')!r}.")
    notes.append("No sparse kernels: CSR layers run in torch, and the agent runs ONNX Runtime "
                 "only; unstructured sparsity only shrinks the file there.")
    if fp.get("governor") and fp["governor"] != "performance":
        notes.append(f"The CPU governor is {fp['governor']!r}: latency may vary with frequency "
                     "scaling (\"performance\" gives steadier numbers).")
    cores = fp.get("cores_available")
    profile: dict[str, Any] = {
        "name": name,
        "description": f"{fp.get('cpu_model') or 'device'} reached at "
                       f"{device_table.get('ssh') or ' '.join(device_table.get('command', []))}",
        "precisions": precisions, "sparse_kernels": [], "arch": arch if arch in ("x86", "arm")
        else None, "isa": isa, "notes": notes, "device": device_table,
        "runtimes": [{"name": "onnxruntime", "provider": "CPUExecutionProvider"}]}
    if isinstance(cores, int) and cores >= 1:
        profile["threads"] = cores
    if profile["arch"] is None:
        profile.pop("arch")
        profile.pop("isa")
    return profile


def profile_toml(profile: dict[str, Any], fingerprint: dict[str, Any]) -> str:
    """TOML text of `profile` (strings in JSON's escaping, which TOML's basic strings share)."""
    q = json.dumps
    lines = ["# Written by `advisor targets probe` from the device's fingerprint:",
             *(f"#   {k}: {fingerprint.get(k)}" for k in
               ("cpu_model", "arch", "cores_available", "memory_mb", "os", "python",
                "onnxruntime", "onnxruntime_providers", "governor")),
             f"name = {q(profile['name'])}", f"description = {q(profile['description'])}"]
    if "threads" in profile:
        lines.append(f"threads = {int(profile['threads'])}")
    lines.append(f"precisions = {q(profile['precisions'])}")
    lines.append("sparse_kernels = []")
    if "arch" in profile:
        lines.append(f"arch = {q(profile['arch'])}")
        lines.append(f"isa = {q(profile['isa'])}")
    lines.append("notes = [")
    lines += [f"  {q(n)}," for n in profile["notes"]]
    lines.append("]")
    lines.append("")
    lines.append("[device]")
    for key, value in profile["device"].items():
        lines.append(f"{key} = {q(value)}")
    for rt in profile["runtimes"]:
        lines += ["", "[[runtimes]]", f"name = {q(rt['name'])}", f"provider = {q(rt['provider'])}"]
    return "\n".join(lines) + "\n"


def probe(name: str, device_table: dict[str, Any], out: Path, force: bool = False
          ) -> tuple[Path, dict[str, Any], str]:
    """Connect, fingerprint, write the profile to `out` (checked by loading it back) and return
    (path, fingerprint, text). An existing `out` is kept unless `force`."""
    import tomllib

    from advisor.device.link import link_from_table
    from advisor.device.remote import device_facts
    from advisor.errors import TargetError
    from advisor.fileio import write_text_atomic
    from advisor.targets import validate_profile

    if not name or not name.strip() or any(c in name for c in "/\\\"") or name.startswith("."):
        raise TargetError(f"--name {name!r} is not a usable target name",
                          "give a short name such as pi5")
    if out.exists() and not force:
        raise TargetError(f"{out} exists; it is not overwritten", "pass --force or --out FILE")
    link: DeviceLink = link_from_table(
        device_table, lambda field, why: TargetError(f"{field} {why}"))
    fp = device_facts(link)["fingerprint"]
    text = profile_toml(derive_profile(name, fp, device_table), fp)
    validate_profile(tomllib.loads(text), out)  # what is written loads back
    write_text_atomic(out, text)
    return out, fp, text
