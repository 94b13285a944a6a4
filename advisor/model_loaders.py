"""Loaders for torch.save files (weights-only unpickling; full unpickling only when trusted),
TorchScript archives and ONNX files. Each returns a `LoadedModel`; `advisor.model_io.load_model`
picks one by the detected format. (`.pt2`: `advisor.model_pt2`.)"""
from __future__ import annotations

import json

import math
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advisor.errors import ModelLoadError
from advisor.model_common import (META_FILE, PT2_HINT, LoadedModel, _build, _first_line,
                                  _has_layers, _load_weights, _pt2_metadata, _recorded_shape,
                                  import_factory)
from advisor.quiet import quiet

__all__ = ["load_torch_save", "load_torchscript", "load_onnx"]

def load_torch_save(path: Path, *, arch, trust_pickle, input_shape, arch_kwargs=None
                    ) -> LoadedModel:
    obj = _torch_load(path, trust_pickle)
    if isinstance(obj, dict) and isinstance(obj.get("model"), nn.Module):
        obj = obj["model"]  # torch.save({"model": model, ...}), a common checkpoint layout
    if isinstance(obj, nn.Module):  # only reachable with trust_pickle
        return LoadedModel(path, "pickle", obj.eval(), None, None, {}, _has_layers(obj))
    state = _find_state_dict(obj)
    if state is None:
        raise ModelLoadError(f"{path} holds a {type(obj).__name__}, neither a model nor a "
                             "state_dict of tensors", f"save the model as .pt2: {PT2_HINT}")
    if not arch:
        raise ModelLoadError(f"{path} is a state_dict (weights only): the architecture is "
                             "needed to use it",
                             "pass --arch pkg.module:factory (a function that builds the model), "
                             f"or save the model as .pt2: {PT2_HINT}")
    kwargs = dict(arch_kwargs or {})
    module = _build(import_factory(arch), kwargs, arch)
    _load_weights(module, state, f"{path} does not fit --arch {arch}"
                  + (f" with --arch-kwargs {json.dumps(kwargs)}" if kwargs else ""))
    return LoadedModel(path, "state_dict", module, None, None,
                       {"arch": arch, **({"arch_kwargs": kwargs} if kwargs else {})},
                       _has_layers(module))

def _torch_load(path: Path, trust_pickle: bool) -> Any:
    """torch.load with weights_only=True; full unpickling only when trusted."""
    try:
        with quiet(stdout=False):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        needed = _refused_global(e)
        if needed is None:
            raise ModelLoadError(f"{path} is corrupt or truncated ({_weights_only_reason(e)})",
                                 "save or copy the model again") from e
        if not trust_pickle:
            raise ModelLoadError(
                f"{path} is a pickled Python object (a whole nn.Module?), and unpickling runs "
                f"arbitrary code: it needs the global {needed}, which weights-only loading does "
                "not allow: refused",
                f"convert it where it was made: {PT2_HINT}; or, only if you trust the file, pass "
                "--trust-pickle") from e
    except Exception as e:
        raise ModelLoadError(f"{path} is corrupt or truncated: {type(e).__name__}: "
                             f"{_first_line(e)}", "save or copy the model again") from e
    try:
        with quiet(stdout=False):
            return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ModelLoadError(f"unpickling {path} failed: {type(e).__name__}: {_first_line(e)}",
                             "the classes it references must be importable here") from e

_REFUSED_GLOBAL = (re.compile(r"GLOBAL ([\w.]+) (?:was not an allowed global|whose module)"),
                   re.compile(r"Unsupported (?:global|class):? (?:GLOBAL )?([\w.]+)"),
                   re.compile(r"(?:call reduce for|unsupported GLOBAL) ([\w.]+)"))

def _refused_global(e: Exception) -> str | None:
    """The global a weights-only load refused (e.g. 'posix.system'), None for a broken file."""
    text = str(e)
    for pattern in _REFUSED_GLOBAL:
        m = pattern.search(text)
        if m:
            return m.group(1).rstrip(".")
    return None

def _weights_only_reason(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    detail = [ln for ln in lines if "truncated" in ln.lower() or "eof" in ln.lower()]
    return (detail or lines[-1:] or ["unreadable pickle"])[0][:200]

def _find_state_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    """A state_dict, also inside common checkpoint dicts ({'state_dict': ...}, {'model': ...})."""
    if _is_tensor_dict(obj):
        return obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model", "weights"):
            if _is_tensor_dict(obj.get(key)):
                return obj[key]
    return None

def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())

def load_torchscript(path: Path, *, arch, trust_pickle, input_shape, arch_kwargs=None
                     ) -> LoadedModel:
    extra = {META_FILE: ""}  # advisor.export.save_torchscript records the input shape here
    try:
        with quiet(stdout=False):
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as e:
        raise ModelLoadError(f"{path} is a TorchScript archive that cannot be loaded: "
                             f"{_first_line(e)}", "save it again, or export a .pt2") from e
    meta = _pt2_metadata(extra.get(META_FILE), path)
    shape = _recorded_shape(meta, path, input_shape)
    return LoadedModel(path, "torchscript", module.eval(), None, shape, meta, False)

def load_onnx(path: Path, *, arch, trust_pickle, input_shape, arch_kwargs=None) -> LoadedModel:
    import onnx

    try:
        onnx.checker.check_model(str(path))
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ModelLoadError(f"{path} is not a valid ONNX model: {_first_line(e)}",
                             "export it again (torch.onnx.export)") from e
    inputs = _onnx_inputs(model)
    if len(inputs) != 1:
        raise ModelLoadError(f"{path} has {len(inputs)} graph inputs; advisor handles "
                             "single-input vision models", "export the model with one input")
    params = sum(math.prod(t.dims) for t in model.graph.initializer)
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    loaded = LoadedModel(path, "onnx", None, path, _onnx_shape(inputs[0]),
                         {"params": params, "opset": opsets, "input_name": inputs[0].name}, False)
    _lift_onnx(loaded, input_shape or loaded.input_shape)
    return loaded

def _lift_onnx(loaded: LoadedModel, shape) -> None:
    """Give an ONNX model a torch module with real layers where it converts (`advisor.
    onnx_lift`), so the structured families apply; the file itself stays the baseline that is
    measured and the start of every ONNX-stage plan. Else record why not."""
    from advisor.onnx_lift import ONNX_LIFT_VERSION, lift_onnx

    meta = loaded.metadata
    if shape is None:
        meta["lift_refused"] = "the input shape is not known (pass --input-shape)"
        return
    try:
        result = lift_onnx(Path(loaded.onnx_path), tuple(shape))
    except Exception as e:  # an ONNX graph this code has not met: post-training families only
        meta["lift_refused"] = f"conversion failed: {type(e).__name__}: {_first_line(e)}"
    else:
        if result.module is not None:
            loaded.module, loaded.editable = result.module, True
            meta["lifted"] = ONNX_LIFT_VERSION
            meta.setdefault("notes", []).append(result.summary())
            return
        meta["lift_refused"] = result.reason
    meta.setdefault("notes", []).append(f"not turned into torch layers: {meta['lift_refused']}")

def _onnx_inputs(model) -> list:
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]

def _onnx_shape(value_info) -> tuple[int, ...] | None:
    """Static dims as given; a symbolic batch dim becomes 1; other symbolic dims → unknown."""
    dims = value_info.type.tensor_type.shape.dim
    shape = []
    for i, d in enumerate(dims):
        if d.HasField("dim_value") and d.dim_value > 0:
            shape.append(d.dim_value)
        elif i == 0:
            shape.append(1)
        else:
            return None
    return tuple(shape) or None
