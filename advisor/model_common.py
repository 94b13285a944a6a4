"""What every model loader shares: `LoadedModel`, the factory allowlist, importing `pkg.module:attr`
specs, building a factory's module and loading weights into it, the `advisor.json` metadata of
advisor's own artefacts, and one-line error texts. Public through `advisor.model_io`."""
from __future__ import annotations

import importlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from torch import nn

from advisor.errors import AdvisorError, InputShapeError, ModelLoadError

META_FILE = "advisor.json"  # written by advisor.export.save_pt2

SHAPE_HINT = "--input-shape 1,3,224,224"
PT2_HINT = 'torch.export.save(torch.export.export(model.eval(), (x,)), "model.pt2")'

def _example_factories() -> frozenset[str]:
    from advisor.examples.models import FACTORIES
    return frozenset(f"advisor.examples.models:{name}" for name in FACTORIES)


# Factories a file may name and have called without --arch: the built-in example architectures.

FACTORY_ALLOWLIST: frozenset[str] = _example_factories()

@dataclass
class LoadedModel:
    """A loaded model plus what advisor needs to measure and transform it."""

    path: Path | None
    format: str
    module: nn.Module | None
    onnx_path: Path | None
    input_shape: tuple[int, ...] | None
    metadata: dict = field(default_factory=dict)
    editable: bool = False


# ---- small public helpers -------------------------------------------------------------------

def parse_input_shape(s: str) -> tuple[int, ...]:
    """'1,3,224,224', '1x3x224x224' or '(1, 3, 224, 224)' → (1, 3, 224, 224)."""
    text = str(s).strip().strip("()[]").replace(" ", "")
    parts = [p for p in re.split(r"[,xX×]", text) if p != ""]
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise InputShapeError(f"invalid input shape {s!r}: expected positive integers such as "
                              "1,3,224,224", f"pass e.g. {SHAPE_HINT}")
    return dims

_SPEC_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

def is_object_spec(spec: str) -> bool:
    """True when `spec` looks like `pkg.module:attr` (and is not an existing file)."""
    return bool(_SPEC_RE.match(spec)) and not Path(spec).exists()

def import_object(spec: str, error: type[AdvisorError] = ModelLoadError) -> Any:
    """Import `attr` from `pkg.module` given 'pkg.module:attr'; raise `error` with a hint.

    The current directory is searched last, so `mymodels:net` works from the console script
    (which, unlike `python -m`, does not put the working directory on sys.path).
    """
    if not _SPEC_RE.match(spec):
        raise error(f"{spec!r} is not of the form pkg.module:attr",
                    "e.g. advisor.examples.models:resnet")
    mod_name, attr = spec.split(":")
    if attr.startswith("__"):
        raise error(f"{spec!r} names a private attribute", "name a public factory function")
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        raise error(f"cannot import {mod_name!r} (from {spec}): {e}",
                    "install the package or run from the directory that holds it") from e
    except Exception as e:
        raise error(f"importing {mod_name!r} (from {spec}) failed: {type(e).__name__}: "
                    f"{_first_line(e)}", "fix the module so that it imports cleanly") from e
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)
    if not hasattr(module, attr):
        raise error(f"module {mod_name!r} has no attribute {attr!r} (from {spec})",
                    f"check the name; the module defines: {_public_names(module)}")
    return getattr(module, attr)

def import_factory(spec: str) -> Callable[..., nn.Module]:
    """The callable behind 'pkg.module:factory' (a function or an nn.Module class)."""
    factory = import_object(spec, ModelLoadError)
    if not callable(factory):
        raise ModelLoadError(f"{spec} is a {type(factory).__name__}, not a callable factory",
                             "name a function or class that returns an nn.Module")
    return factory


# ---- building a module and giving it weights ---------------------------------------------

def _build(factory: Callable[..., Any], kwargs: dict, spec: str) -> nn.Module:
    try:
        module = factory(**kwargs)
    except Exception as e:
        raise ModelLoadError(f"calling {spec}({_kwargs_text(kwargs)}) failed: "
                             f"{type(e).__name__}: {_first_line(e)}",
                             "check --arch-kwargs against the factory's parameters" if kwargs
                             else "the factory must build the model without required arguments; "
                             "pass its arguments with --arch-kwargs") from e
    if not isinstance(module, nn.Module):
        raise ModelLoadError(f"{spec} returned a {type(module).__name__}, not an nn.Module",
                             "name a function or class that returns an nn.Module")
    return module.eval()

def _load_weights(module: nn.Module, state: dict, what: str) -> None:
    """Strict load_state_dict; strips a DataParallel 'module.' prefix if every key has it."""
    if all(k.startswith("module.") for k in state) and \
            not any(k.startswith("module.") for k in module.state_dict()):
        state = {k[len("module."):]: v for k, v in state.items()}
    if getattr(state, "_metadata", None) is None:
        # weights taken from a torch.export program carry no per-module versions; modules that
        # check theirs (torchvision's MNASNet) then refuse to load: the factory's own apply
        from collections import OrderedDict

        meta = getattr(module.state_dict(), "_metadata", None)
        state = OrderedDict(state)
        if meta is not None:
            state._metadata = meta
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelLoadError(f"{what}: {_state_dict_mismatch(e)}",
                             "pass the factory that built these weights (same layer names "
                             "and shapes)") from e

def _state_dict_mismatch(e: RuntimeError) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    detail = lines[1] if len(lines) > 1 else lines[0] if lines else "mismatch"
    return detail[:240]

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

def _has_layers(module: nn.Module) -> bool:
    return any(isinstance(m, _LAYERS) for m in module.modules())


# ---- advisor.json metadata (.pt2 and TorchScript artefacts) ------------------------------

def _pt2_metadata(text: str | None, path: Path) -> dict:
    if not text:
        return {}
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise ModelLoadError(f"{path}: its {META_FILE} metadata (extra/{META_FILE}) is not valid "
                             f"JSON ({_first_line(e)})",
                             "export it again with advisor.export.save_pt2") from e
    if not isinstance(meta, dict):
        return {}
    if "arch" in meta and not isinstance(meta["arch"], str):
        meta.setdefault("notes", []).append(f"the arch recorded in {META_FILE} is not a string; "
                                            "it was ignored")
        meta.pop("arch")
    if not isinstance(meta.get("notes", []), list):
        meta["notes"] = []
    return meta

def _recorded_shape(meta: dict, path: Path, explicit) -> tuple[int, ...] | None:
    """The input shape in the file's metadata, checked: a list of positive integers. A bad one is
    an InputShapeError, or ignored with a note when the user passed --input-shape."""
    value = meta.get("input_shape")
    if value is None:
        return None
    if isinstance(value, list) and value and all(
            type(d) is int and 0 < d < 2 ** 31 for d in value):
        return tuple(value)
    text = json.dumps(value)[:60] if _jsonable(value) else repr(value)[:60]
    if explicit:
        meta.setdefault("notes", []).append(
            f"the input_shape recorded in {META_FILE} ({text}) is not a list of positive "
            "integers; it was ignored")
        return None
    raise InputShapeError(f"{path}: the input_shape recorded in its {META_FILE} metadata ({text})"
                          " is not a list of positive integers",
                          f"pass the shape the model expects, e.g. {SHAPE_HINT}")

def _jsonable(value) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


# ---- error texts ------------------------------------------------------------------------------

def _first_line(e: BaseException) -> str:
    for line in str(e).splitlines():
        if line.strip():
            return line.strip()[:300]
    return type(e).__name__

def _model_message(e: BaseException) -> str:
    """The model's own complaint in one line. TorchScript wraps it: a generic header, the
    scripted traceback, then the real error on the last line."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if lines and lines[0].startswith("The following operation failed in the TorchScript"):
        return lines[-1][:300]
    return _first_line(e)

def _shape_text(shape) -> str:
    return ",".join(str(d) for d in shape)

def _kwargs_text(kwargs: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())

def _public_names(module) -> str:
    names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
    return ", ".join(names[:12]) or "nothing callable"


def arch_record(loaded) -> dict:
    """{"arch", "arch_kwargs"} the model was rebuilt from, or {"lifted": version} when it was
    lifted from its exported graph (only those known): what plan.json's model section and the
    .pt2 advisor writes record."""
    meta = loaded.metadata or {}
    return {k: meta[k] for k in ("arch", "arch_kwargs", "lifted") if meta.get(k)}


def weights_digest(model) -> str:
    """A hash of `model`'s state, every parameter and buffer bit for bit, whatever its dtype or
    layout (the hash of nothing for what has no state_dict): the trial cache's key for a model
    held in memory, and what data-parallel workers compare (`advisor.data_parallel`)."""
    import hashlib

    import torch

    h = hashlib.sha256()
    state = model.state_dict() if hasattr(model, "state_dict") else {}
    for name, value in state.items():
        h.update(name.encode())
        if not isinstance(value, torch.Tensor):
            h.update(repr(value).encode())
            continue
        t = value.detach()
        if t.is_quantized:
            t = t.int_repr()
        elif t.layout != torch.strided:
            t = t.to_dense()
        t = t.cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
