"""What a profile adds beside latency: FLOPs and parameters, size on disk, and the baseline's hot
spots. Each is informative, not essential: a failure becomes a warning, not an error.
"""
from __future__ import annotations

from pathlib import Path

from advisor.measure.layers import Hotspots
from advisor.measure.profile_runtime import first_line


def count_model_flops(loaded, artefacts: dict[str, Path], warnings: list[str]):
    """FLOPs of one input (the eager module, else the ONNX file); None with a warning."""
    from advisor.measure.flops import count_flops, count_onnx_flops

    one = (1,) + tuple(int(d) for d in loaded.input_shape[1:])
    try:
        if loaded.module is not None:
            return count_flops(loaded.module, one)
        onnx = artefacts.get("onnxruntime") or loaded.onnx_path
        return count_onnx_flops(onnx, one) if onnx else None
    except Exception as e:  # noqa: BLE001 - FLOPs are informative, not essential
        warnings.append(f"FLOPs could not be counted ({first_line(e)})")
        return None


def param_count(loaded, flops) -> int | None:
    if flops is not None and flops.params:
        return int(flops.params)
    if loaded.module is not None:
        return int(sum(p.numel() for p in loaded.module.parameters()))
    return None


def baseline_hotspots(loaded, artefacts: dict[str, Path], primary: str, shape, target,
                      threads: int, runs: int, warnings: list[str]) -> Hotspots | None:
    """Hot spots measured like a candidate's (`artifact_hotspots` on the primary runtime's
    artefact, so the baseline and the chosen plan name the same layers); a torch primary keeps
    the hooks on the eager module, which name the same layers as its `.pt2`."""
    from advisor.measure.layers import artifact_hotspots, hotspots

    try:
        path = artefacts.get(primary)
        eager = loaded.module is not None and loaded.editable
        if path is not None and (primary == "onnxruntime" or
                                 (not eager and target.device == "cpu" and path.suffix == ".pt2")):
            provider = target.runtime(primary).provider if primary == "onnxruntime" else None
            return artifact_hotspots(path, primary, shape, threads=threads, runs=runs, target=target,
                                     **({"provider": provider} if provider else {}))
        if loaded.module is not None:
            module = loaded.module
            if target.device == "cuda":
                import copy
                module = copy.deepcopy(module).to("cuda")
            return hotspots(module, shape, threads=threads, runs=runs, device=target.device)
        return None
    except Exception as e:  # noqa: BLE001 - hot spots are informative, not essential
        warnings.append(f"hot spots could not be measured ({first_line(e)})")
        return None


def size_on_disk(loaded, artefacts: dict[str, Path]) -> tuple[float | None, str]:
    """Size on disk: the fp32 ONNX file (+ external data) if there is one, else the input file."""
    onnx = artefacts.get("onnxruntime")
    if onnx is not None and onnx.is_file():
        data = onnx.with_name(onnx.name + ".data")
        size = onnx.stat().st_size + (data.stat().st_size if data.is_file() else 0)
        return size / 2 ** 20, "fp32 ONNX" if loaded.onnx_path is None else "input ONNX file"
    if loaded.path and Path(loaded.path).is_file():
        return Path(loaded.path).stat().st_size / 2 ** 20, f"input {loaded.format} file"
    pt2 = artefacts.get("torch")
    if pt2 is not None and pt2.is_file():
        return pt2.stat().st_size / 2 ** 20, ".pt2 export"
    return None, "unknown"
