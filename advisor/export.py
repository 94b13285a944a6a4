"""Deployable artefacts: ONNX (one file, dynamic batch) and torch.export `.pt2`.

- ONNX goes through `torch.onnx.export(dynamo=True)` (onnxscript), with `external_data=False` so
  the model is one file (models over 2 GB cannot be, and keep the `.data` file). The batch
  dimension is dynamic where the model allows it; torch.export specialises a batch-1 example to
  the constant 1, so we export with an example batch of at least 2.
- Every ONNX export is checked against torch in ONNX Runtime; the max abs difference is returned.
- `.pt2` files carry `advisor.json` (extra file) with the input shape and, where known, the
  architecture factory, so `model_io` can rebuild an editable eager module from them.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from advisor.fileio import atomic_path

META_FILE = "advisor.json"
_TWO_GB = 2 * 1024 ** 3


def _batched_example(input_shape: tuple[int, ...]) -> torch.Tensor:
    shape = (max(2, input_shape[0]),) + tuple(input_shape[1:])
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


@contextlib.contextmanager
def _quiet():
    """The dynamo exporter prints progress to stdout and warns a lot; keep our output clean."""
    buf = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def export_program(model: nn.Module, input_shape: tuple[int, ...], dynamic_batch: bool = True):
    """torch.export the model (eval mode) with a dynamic batch if possible, else a static one."""
    model = model.eval()
    x = _batched_example(input_shape)
    if dynamic_batch:
        try:
            with _quiet():
                return torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},)), True
        except Exception:
            pass
    with _quiet():
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


def export_onnx(model: nn.Module, path: str | Path, input_shape: tuple[int, ...],
                dynamic_batch: bool = True, opset: int | None = None,
                check: bool = True) -> dict[str, Any]:
    """Export to a single ONNX file (atomically); returns {'dynamic_batch', 'max_abs_diff', ...}."""
    model = model.eval()
    x = _batched_example(input_shape) if dynamic_batch else torch.randn(*input_shape)
    kwargs: dict[str, Any] = {"dynamo": True, "input_names": ["input"], "output_names": ["output"]}
    if opset is not None:
        kwargs["opset_version"] = opset
    dynamic = False
    path = Path(path)
    with atomic_path(path) as tmp:
        onnx_tmp = tmp.with_suffix(".onnx")
        try:
            prog = None
            if dynamic_batch:
                try:
                    with _quiet():
                        prog = torch.onnx.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},),
                                                 **kwargs)
                    dynamic = True
                except Exception:
                    prog = None
            if prog is None:
                x = torch.randn(*input_shape)
                with _quiet():
                    prog = torch.onnx.export(model, (x,), **kwargs)
            big = _param_bytes(model) > _TWO_GB
            with _quiet():
                prog.save(str(onnx_tmp), external_data=big)
            onnx_tmp.replace(tmp)
        finally:
            if onnx_tmp.exists():
                onnx_tmp.unlink()
    info: dict[str, Any] = {"path": str(path), "dynamic_batch": dynamic,
                            "size_bytes": path.stat().st_size}
    if check:
        info["max_abs_diff"] = compare_onnx_to_torch(model, path, x)
    return info


def _param_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def onnx_session(path: str | Path, threads: int | None = None, providers: list[str] | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=providers or ["CPUExecutionProvider"])


def run_onnx(session, x: torch.Tensor | np.ndarray) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
    name = session.get_inputs()[0].name
    return session.run(None, {name: arr.astype(np.float32, copy=False)})[0]


@torch.inference_mode()
def compare_onnx_to_torch(model: nn.Module, path: str | Path, x: torch.Tensor) -> float:
    """Max abs difference between torch and ONNX Runtime outputs on `x`."""
    ref = model.eval()(x).float().cpu().numpy()
    out = run_onnx(onnx_session(path), x)
    return float(np.max(np.abs(ref - out)))
