"""Did `advisor apply` rebuild the model `advisor analyze` measured? A small fingerprint says.

`analyze` records, for the chosen plan, the sha256 of the artefact it measured, a hash of its
weights, and its outputs on a few seeded random inputs ("probe inputs": the same on every
machine, no data needed). `advisor apply` replays the plan, fingerprints what it built and
compares:

- **outputs** on the probe inputs must agree within `TOLERANCE` × the largest |logit| (ONNX
  Runtime's kernels differ slightly between CPUs, e.g. with and without VNNI);
- **weights**: for a plan that does not train, the replay should produce the same weights
  (same seed, same calibration data); a training plan replayed on another machine or under a
  time cap may not, and the outputs decide.

The verdict is stated, never assumed: "reproduced", or "differs" with the largest difference.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["fingerprint", "compare", "probe_inputs", "TOLERANCE", "PROBE_SEED", "PROBE_N"]

PROBE_SEED = 20240601
PROBE_N = 4
TOLERANCE = 1e-3  # relative to the largest |logit| on the probe inputs


def probe_inputs(input_shape) -> torch.Tensor:
    import torch

    g = torch.Generator().manual_seed(PROBE_SEED)
    return torch.randn((PROBE_N,) + tuple(input_shape[1:]), generator=g)


def fingerprint(artifact: str | Path, runtime: str, input_shape, predict=None) -> dict[str, Any]:
    """Outputs on the probe inputs, the weights hash and the file's sha256 of `artifact`.

    `predict` (inputs → numpy logits) is built from the artefact when not given."""
    from advisor.fileio import sha256_file

    if predict is None:
        from advisor.measure.accuracy import artifact_predictor
        predict = artifact_predictor(artifact, runtime)
    outputs = np.asarray(predict(probe_inputs(input_shape)), dtype=np.float64)
    return {"runtime": runtime, "artifact_sha256": sha256_file(artifact),
            "weights_sha256": weights_sha256(artifact),
            "probe": {"seed": PROBE_SEED, "n": PROBE_N, "dist": "standard normal"},
            "outputs": [[float(f"{v:.7g}") for v in row] for row in outputs.reshape(PROBE_N, -1)]}


def weights_sha256(artifact: str | Path) -> str | None:
    """sha256 over the weights by name (ONNX initializers, .pt2 state_dict); None otherwise.

    The file's own hash also covers graph metadata (node names, producer version) that may
    differ between exports of the same weights; this hash does not."""
    path = Path(artifact)
    h = hashlib.sha256()
    if path.suffix == ".onnx":
        import onnx
        from onnx import numpy_helper

        model = onnx.load(str(path))
        for init in sorted(model.graph.initializer, key=lambda t: t.name):
            arr = numpy_helper.to_array(init)
            h.update(init.name.encode() + str(arr.dtype).encode() + str(arr.shape).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()
    if path.suffix == ".pt2":
        import torch

        ep = torch.export.load(str(path))
        for name, t in sorted(ep.state_dict.items()):
            h.update(name.encode() + str(t.dtype).encode() + str(tuple(t.shape)).encode())
            h.update(t.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()
    return None


def compare(expected: dict, actual: dict, *, trains: bool) -> dict[str, Any]:
    """The verdict of a replay against what analyze measured (see the module docstring)."""
    exp = np.asarray(expected.get("outputs") or [], dtype=np.float64)
    got = np.asarray(actual.get("outputs") or [], dtype=np.float64)
    result: dict[str, Any] = {"tolerance": TOLERANCE,
                              "weights_identical": (expected.get("weights_sha256") is not None and
                                                    expected.get("weights_sha256") ==
                                                    actual.get("weights_sha256")),
                              "file_identical": expected.get("artifact_sha256") ==
                              actual.get("artifact_sha256")}
    if exp.size == 0 or exp.shape != got.shape:
        result.update(status="differs", max_abs_diff=None,
                      reason="the outputs have another shape than the measured model's")
        return result
    scale = max(1.0, float(np.max(np.abs(exp))))
    diff = float(np.max(np.abs(exp - got)))
    result["max_abs_diff"] = diff
    result["status"] = "reproduced" if diff <= TOLERANCE * scale else "differs"
    if result["status"] == "differs":
        result["reason"] = (f"outputs on the probe inputs differ by up to {diff:.3g} "
                            f"(tolerance {TOLERANCE * scale:.3g})" +
                            ("; the plan trains, and training under a time limit or on another "
                             "machine need not repeat exactly" if trains else
                             "; was it calibrated on other data?"))
    elif not trains and not result["weights_identical"]:
        result["note"] = "outputs agree; the weights hash differs (e.g. another ONNX Runtime)"
    return result
