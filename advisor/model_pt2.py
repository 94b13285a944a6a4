"""The `.pt2` loader: scan first (`advisor.pt2_safety`) unless trusted, let torch load exactly the
scanned bytes, then rebuild an editable eager module from an allowlisted (or `--arch`)
factory checked against the graph, else lift the graph into real layers (`advisor.lift`), else
hand out the graph module with eval() made a no-op."""
from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advisor.errors import AdvisorError, ModelLoadError
from advisor.model_common import (FACTORY_ALLOWLIST, META_FILE, LoadedModel, _build,
                                  _first_line, _has_layers, _load_weights, _pt2_metadata,
                                  _recorded_shape, _shape_text, import_factory)
from advisor.pt2_safety import scan_pt2
from advisor.quiet import quiet

__all__ = ["load_pt2"]

def load_pt2(path: Path, *, arch, trust_pickle, input_shape, arch_kwargs=None) -> LoadedModel:
    source: Any = str(path)  # trusted: torch reads the file as it is
    if not trust_pickle:
        scan = scan_pt2(path)
        if scan.hazards:
            raise ModelLoadError(
                f"{path} may run code when loaded ({'; '.join(scan.hazards[:3])}): refused",
                "re-export it with torch.export.save from a trusted model; or, only if you "
                "trust the file, pass --trust-pickle")
        source = scan.repack()  # torch loads exactly the bytes the scan read
    extra = {META_FILE: ""}
    try:
        with quiet(stdout=False):
            ep = torch.export.load(source, extra_files=extra)
    except Exception as e:
        raise ModelLoadError(f"{path} is a .pt2 archive that cannot be loaded: "
                             f"{type(e).__name__}: {_first_line(e)}",
                             "export it again with this torch version "
                             f"({torch.__version__.split('+')[0]})") from e
    meta = _pt2_metadata(extra.get(META_FILE), path)
    shape = _recorded_shape(meta, path, input_shape) or _ep_input_shape(ep)
    loaded = LoadedModel(path, "pt2", None, None, shape, meta, False)
    spec = arch or (meta.get("arch") if meta.get("arch") in FACTORY_ALLOWLIST else None)
    if meta.get("arch") and not spec:
        meta.setdefault("notes", []).append(
            f"the file names the architecture {meta['arch']!r}, which is not on the allowlist; "
            "it was not imported (pass --arch with it to rebuild an editable module if you "
            "trust it)")
    if spec:
        # explicit --arch-kwargs win; else the file's own, when it names this architecture
        kwargs = arch_kwargs if arch_kwargs is not None else \
            ((meta.get("arch_kwargs") or {}) if spec == meta.get("arch") else {})
        module = _rebuild_from_ep(ep, spec, kwargs, shape or input_shape, strict=bool(arch),
                                  path=path, notes=meta.setdefault("notes", []))
        if module is not None:
            loaded.module, loaded.editable = module, _has_layers(module)
            meta["arch"] = spec
            if kwargs:
                meta["arch_kwargs"] = dict(kwargs)
            else:
                meta.pop("arch_kwargs", None)
            return loaded
    lifted = _lift(ep, shape or input_shape, meta)
    if lifted is not None:
        loaded.module, loaded.editable = lifted, _has_layers(lifted)
        return loaded
    loaded.module = _graph_module(ep)
    return loaded

def _lift(ep, shape, meta: dict) -> nn.Module | None:
    """The program lifted into real layers (`advisor.lift`), recorded in the metadata; or None
    with the reason in `meta["lift_refused"]` and the notes."""
    from advisor.lift import LIFT_VERSION, lift_program

    if shape is None:
        meta["lift_refused"] = "the input shape is not known (pass --input-shape)"
        return None
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    try:
        result = lift_program(ep, x)
    except Exception as e:  # a graph lifting has not met: the post-training families still run
        result = None
        why = f"lifting failed: {type(e).__name__}: {_first_line(e)}"
    else:
        why = result.reason
    if result is None or result.module is None:
        meta["lift_refused"] = why
        meta.setdefault("notes", []).append(f"not lifted into layers: {why}")
        return None
    meta["lifted"] = LIFT_VERSION
    meta.setdefault("notes", []).append(result.summary())
    return result.module

def _rebuild_from_ep(ep, spec: str, kwargs: dict, shape, *, strict: bool, path: Path,
                     notes: list) -> nn.Module | None:
    """Eager `factory(**kwargs)` holding the program's weights, checked against the graph.

    `strict` (the user named --arch): a mismatch is an error. Otherwise (the allowlisted
    architecture recorded in the file) it falls back to the graph with a note — a pruned model
    keeps its original arch name but no longer fits it.
    """
    try:
        if not isinstance(kwargs, dict):
            raise ModelLoadError(f"{path}: arch_kwargs in its metadata is not a JSON object")
        module = _build(import_factory(spec), kwargs, spec)
        _load_weights(module, dict(ep.state_dict), f"{path} does not fit {spec}")
        if shape is not None:
            _same_outputs(module, ep, shape, spec)
        return module
    except AdvisorError as e:
        if strict:
            raise
        notes.append(f"not rebuilt as {spec} ({e.message}); using the exported graph")
        return None

def _same_outputs(module: nn.Module, ep, shape, spec: str) -> None:
    """The rebuilt module must compute what the exported graph computes (same weights but a
    different forward would otherwise pass unnoticed)."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    try:
        with torch.inference_mode(), quiet(stdout=False):
            ref, out = ep.module()(x), module(x)
    except Exception as e:
        raise ModelLoadError(f"could not compare {spec} with the exported graph at input shape "
                             f"{_shape_text(shape)}: {_first_line(e)}",
                             "pass the factory the model was exported from") from e
    if not isinstance(ref, torch.Tensor) or not isinstance(out, torch.Tensor) or \
            ref.shape != out.shape or not torch.allclose(ref, out, rtol=1e-3, atol=1e-4):
        raise ModelLoadError(f"{spec} with these weights computes different outputs than the "
                             "exported graph", "pass the factory the model was exported from")

def _ep_input_shape(ep) -> tuple[int, ...] | None:
    """Shape of the program's (single) user input; a symbolic batch dim becomes 1."""
    from torch.export.graph_signature import InputKind

    names = [s.arg.name for s in ep.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    nodes = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    if len(names) != 1 or "val" not in nodes[names[0]].meta:
        return None
    shape = []
    for i, d in enumerate(nodes[names[0]].meta["val"].shape):
        if isinstance(d, int):
            shape.append(d)
        elif i == 0:
            shape.append(1)
        else:
            return None
    return tuple(shape)

def _graph_module(ep) -> nn.Module:
    """`ep.module()` with `eval()` as a no-op (the graph's mode was fixed at export time).

    torch makes eval()/train() raise on these modules; callers call `.eval()` on every model, so
    eval is allowed and returns the module, while train() still raises with a reason.
    """
    with quiet(stdout=False):
        gm = ep.module()
    gm.eval = types.MethodType(_frozen_eval, gm)
    gm.train = types.MethodType(_frozen_train, gm)
    return gm

def _frozen_eval(self):
    return self

def _frozen_train(self, mode: bool = True):
    if mode:
        raise NotImplementedError("a model loaded from a torch.export graph cannot be trained: "
                                  "its train/eval behaviour was fixed at export; rebuild it "
                                  "from its architecture (--arch) to train")
    return self
