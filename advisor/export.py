"""Deployable artefacts: ONNX (one file, dynamic batch) and torch.export `.pt2`.

- ONNX goes through `torch.onnx.export(dynamo=True)` (onnxscript) and is written as one file
  (`external_data=False`); only models over 2 GB (the protobuf limit) keep a `<name>.data` file
  beside them. The batch dimension is dynamic where the model allows it; torch.export specialises
  a batch-1 example to the constant 1, so we export with an example batch of at least 2.
- The exporter annotates every node with the Python stack trace and FX node text of the user's
  code (file paths, source lines); that is dropped, while the module scope (`namespace`,
  `pkg.torch.onnx.name_scopes`) is kept so that per-layer reports can name layers.
- Every ONNX export is checked against torch in ONNX Runtime (at the export batch and, when the
  batch is dynamic, at batch 1 as well); the max abs difference is returned.
- `.pt2` files carry `advisor.json` (extra file) with the input shape and, where known, the
  architecture factory, so `model_io` can rebuild an editable eager module from them.
- Models holding `torch.ao` packed parameters (dynamic int8 Linear/LSTM) cannot go through
  torch.export in torch 2.13 (`LinearPackedParamsBase` has no `__obj_flatten__`);
  `save_torchscript` writes those as a TorchScript file instead.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from advisor.fileio import atomic_path
from advisor.quiet import quiet

META_FILE = "advisor.json"
_TWO_GB = 2 * 1024 ** 3
# node annotations that embed the user's source (paths, code lines): not part of a deployable file
_DROPPED_METADATA = ("pkg.torch.onnx.stack_trace", "pkg.torch.onnx.fx_node")


def _batched_example(input_shape: tuple[int, ...]) -> torch.Tensor:
    shape = (max(2, input_shape[0]),) + tuple(input_shape[1:])
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def export_program(model: nn.Module, input_shape: tuple[int, ...], dynamic_batch: bool = True):
    """torch.export the model (eval mode) with a dynamic batch if possible, else a static one.

    Returns `(ExportedProgram, dynamic: bool)`.
    """
    model = model.eval()
    x = _batched_example(input_shape)
    if dynamic_batch:
        try:
            with quiet():
                return torch.export.export(
                    model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},)), True
        except Exception:
            pass
    with quiet():
        return torch.export.export(model, (torch.randn(*input_shape),)), False


def save_pt2(model: nn.Module, path: str | Path, input_shape: tuple[int, ...],
             metadata: dict[str, Any] | None = None) -> Path:
    """Write `model` as a torch.export `.pt2` (atomically) with advisor metadata."""
    ep, dynamic = export_program(model, input_shape)
    meta = {"format": "advisor-pt2", "version": 1, "input_shape": list(input_shape),
            "dynamic_batch": dynamic, **(metadata or {})}
    with atomic_path(path) as tmp:
        torch.export.save(ep, str(tmp), extra_files={META_FILE: json.dumps(meta)})
    return Path(path)


def save_torchscript(model: nn.Module, path: str | Path, input_shape: tuple[int, ...],
                     metadata: dict[str, Any] | None = None) -> Path:
    """Write `model` as a traced TorchScript file (for modules torch.export cannot take, such as
    `torch.ao` dynamic int8); the advisor metadata travels as the `advisor.json` extra file."""
    meta = {"format": "advisor-torchscript", "version": 1, "input_shape": list(input_shape),
            **(metadata or {})}
    from advisor.sparse import has_csr, script_csr_layers

    model = (script_csr_layers(model) if has_csr(model) else model).eval()
    with quiet(), torch.inference_mode(False), torch.no_grad():
        traced = torch.jit.trace(model, (_batched_example(input_shape),), check_trace=False)
    with atomic_path(path) as tmp, quiet():
        torch.jit.save(traced, str(tmp), _extra_files={META_FILE: json.dumps(meta)})
    return Path(path)


def save_torch_artifact(model: nn.Module, path: str | Path, input_shape: tuple[int, ...],
                        metadata: dict[str, Any] | None = None) -> Path:
    """`.pt2` when torch.export takes the model, else TorchScript (`.ts` beside `path`).

    Returns the path written. Only modules with `torch.ao` packed parameters or CSR sparse
    layers (torch.export cannot save sparse tensors) take the TorchScript route; any other export
    failure is raised as it is.
    """
    from advisor.sparse import has_csr

    if has_csr(model):
        return save_torchscript(model, Path(path).with_suffix(".ts"), input_shape, metadata)
    try:
        return save_pt2(model, path, input_shape, metadata)
    except Exception:
        if not _has_packed_params(model):
            raise
    return save_torchscript(model, Path(path).with_suffix(".ts"), input_shape, metadata)


def _has_packed_params(model: nn.Module) -> bool:
    return any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())


def export_onnx(model: nn.Module, path: str | Path, input_shape: tuple[int, ...],
                dynamic_batch: bool = True, opset: int | None = None,
                check: bool = True) -> dict[str, Any]:
    """Export to a single ONNX file (atomically).

    Returns {'path', 'dynamic_batch', 'size_bytes', 'external_data', 'max_abs_diff'}. The dynamic
    batch is tried first (example batch >= 2); a model whose graph fixes the batch falls back to
    the static `input_shape`.
    """
    model = model.eval()
    path = Path(path)
    kwargs: dict[str, Any] = {"dynamo": True, "input_names": ["input"], "output_names": ["output"]}
    if opset is not None:
        kwargs["opset_version"] = opset
    prog, dynamic, x = None, False, None
    if dynamic_batch:
        x = _batched_example(input_shape)
        try:
            with quiet():
                prog = torch.onnx.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},),
                                         **kwargs)
            dynamic = True
        except Exception:
            prog = None
    if prog is None:
        x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))
        with quiet():
            prog = torch.onnx.export(model, (x,), **kwargs)
    external = _param_bytes(model) > _TWO_GB
    if external:
        # the weights live in a side file named after the model: no atomic rename here
        path.parent.mkdir(parents=True, exist_ok=True)
        with quiet():
            prog.save(str(path), external_data=True)
    else:
        import onnx

        proto = prog.model_proto
        _drop_source_metadata(proto.graph)
        with atomic_path(path) as tmp:
            onnx.save_model(proto, str(tmp))
    info: dict[str, Any] = {"path": str(path), "dynamic_batch": dynamic,
                            "size_bytes": path.stat().st_size, "external_data": external}
    if check:
        info["max_abs_diff"] = compare_onnx_to_torch(model, path, x)
        if dynamic and x.shape[0] > 1:
            info["max_abs_diff"] = max(info["max_abs_diff"],
                                       compare_onnx_to_torch(model, path, x[:1]))
    return info


def _drop_source_metadata(graph) -> None:
    for node in graph.node:
        keep = [p for p in node.metadata_props if p.key not in _DROPPED_METADATA]
        if len(keep) != len(node.metadata_props):
            del node.metadata_props[:]
            node.metadata_props.extend(keep)
        for attr in node.attribute:
            if attr.HasField("g"):
                _drop_source_metadata(attr.g)
            for g in attr.graphs:
                _drop_source_metadata(g)


def _param_bytes(model: nn.Module) -> int:
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def onnx_session(path: str | Path, threads: int | None = None, providers: list[str] | None = None):
    """A quiet ONNX Runtime session (CPU provider unless `providers` says otherwise)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=providers or ["CPUExecutionProvider"])


def run_onnx(session, x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Run the session's first input on `x` (float32) and return its first output."""
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
    name = session.get_inputs()[0].name
    return session.run(None, {name: arr.astype(np.float32, copy=False)})[0]


@torch.inference_mode()
def compare_onnx_to_torch(model: nn.Module, path: str | Path, x: torch.Tensor) -> float:
    """Max abs difference between torch and ONNX Runtime outputs on `x`."""
    ref = model.eval()(x).float().cpu().numpy()
    out = run_onnx(onnx_session(path), x)
    return float(np.max(np.abs(ref - out)))
