"""Load a model from any supported format — the one place in advisor that unpickles (opt-in).

The format is recognised by content (magic bytes, zip member names), not by the extension:

| what the user gives                         | format          | module                    | editable |
|---------------------------------------------|-----------------|---------------------------|----------|
| torch.export `.pt2` naming an allowlisted   | `pt2`           | eager module rebuilt from | yes      |
| architecture, or any `.pt2` plus `--arch`   |                 | the factory + the weights |          |
| any other `.pt2`                            | `pt2`           | `ExportedProgram.module()`| no       |
| TorchScript archive (`torch.jit.save`)      | `torchscript`   | `torch.jit.load`          | no       |
| state_dict (`torch.save(m.state_dict())`)   | `state_dict`    | `--arch` factory + weights| yes      |
|   plus `--arch pkg.module:factory`          |                 |                           |          |
| `pkg.module:factory` (architecture in code) | `factory`       | factory() (its own init)  | yes      |
| whole pickled module (`torch.save(model)`)  | `pickle`        | only with `--trust-pickle`| yes      |
| ONNX (`.onnx`)                              | `onnx`          | None (`onnx_path` is set) | no       |

"Editable" means the module has real layers (`nn.Conv2d`, `nn.Linear`) that structural passes can
rewrite; a torch.export graph holds aten calls only.

Safety. `torch.load(weights_only=True)` is used for every torch.save file; a file that needs
full unpickling is refused unless `trust_pickle=True`, naming the global it would need.
`torch.export.load` is not safe on an untrusted file either, so without `trust_pickle` a `.pt2`
is scanned by `advisor.pt2_safety` (its docstring has the threat model: every route by which
torch can unpickle, exec or eval, and how each is closed), refused if any route is present, and
torch loads an in-memory archive rebuilt from the scanned bytes, never the file itself. Factories named inside a file are only imported when they are on `FACTORY_ALLOWLIST`
(the built-in examples) or the user names one with `--arch`: a file could name `os:system`.

After loading, one forward pass with zeros of the input shape checks that the model accepts it.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import logging
import math
import os
import pickle
import re
import sys
import types
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from advisor.errors import AdvisorError, InputShapeError, ModelLoadError
from advisor.pt2_safety import pt2_hazards, scan_pt2

__all__ = ["LoadedModel", "load_model", "parse_input_shape", "import_factory", "import_object",
           "model_summary", "detect_format", "pt2_hazards", "FACTORY_ALLOWLIST"]

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


def model_summary(loaded: LoadedModel) -> dict:
    """Printable facts: path, format, parameter count, input shape, editable, file size."""
    if loaded.module is not None:
        params = sum(p.numel() for p in loaded.module.parameters())
    else:
        params = loaded.metadata.get("params")
    path = loaded.path
    return {"path": str(path) if path else None, "format": loaded.format, "params": params,
            "input_shape": list(loaded.input_shape) if loaded.input_shape else None,
            "editable": loaded.editable, "arch": loaded.metadata.get("arch"),
            "size_bytes": path.stat().st_size if path and path.is_file() else None}


# ---- entry point ----------------------------------------------------------------------------

def load_model(spec: str, *, arch: str | None = None, input_shape: tuple | str | None = None,
               trust_pickle: bool = False) -> LoadedModel:
    """Load `spec` (a file or 'pkg.module:factory'), resolve its input shape and check that one
    forward pass with zeros of that shape runs.

    An explicit `input_shape` wins over the one recorded in the artefact (the examples are
    fully convolutional, so a 32x32 model can be measured at 224x224).
    """
    spec = str(spec)
    shape = _normalise_shape(input_shape)
    if is_object_spec(spec):
        loaded = _load_factory_spec(spec)
    else:
        path = _existing_file(spec)
        fmt = detect_format(path)
        loaded = _LOADERS[fmt](path, arch=arch, trust_pickle=trust_pickle, input_shape=shape)
        if arch and loaded.format not in ("pt2", "state_dict"):
            loaded.metadata.setdefault("notes", []).append(
                f"--arch is ignored for {loaded.format} models")
    loaded.input_shape = shape or loaded.input_shape
    if loaded.input_shape is None:
        raise InputShapeError(f"{spec}: the input shape is not recorded in this {loaded.format} "
                              "model", f"pass it, e.g. {SHAPE_HINT}")
    _check_forward(loaded, spec)
    return loaded


def _normalise_shape(input_shape) -> tuple[int, ...] | None:
    if input_shape is None or input_shape == "":
        return None
    if isinstance(input_shape, str):
        return parse_input_shape(input_shape)
    return parse_input_shape(",".join(str(int(d)) for d in input_shape))


def _existing_file(spec: str) -> Path:
    path = Path(spec).expanduser()
    if not path.exists():
        hint = "check the path" + ("; an architecture in code is given as pkg.module:factory"
                                   if ":" in spec else "")
        raise ModelLoadError(f"model file not found: {spec}", hint)
    if path.is_dir():
        raise ModelLoadError(f"{spec} is a directory, not a model file",
                             "pass the model file itself (.pt2, .onnx, .pt)")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{spec} is empty (0 bytes)",
                             "the save was probably interrupted: save or copy the model again")
    return path


# ---- format detection -----------------------------------------------------------------------

_ZIP_MAGIC = b"PK\x03\x04"
_KNOWN_NON_MODELS = (
    (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"), (b"\x89HDF", "an HDF5 file (Keras?)"),
    (b"\x1f\x8b", "a gzip archive"), (b"BM", "a BMP image"),
)


def detect_format(path: Path) -> str:
    """One of 'pt2', 'torchscript', 'torch_save', 'onnx'; raises ModelLoadError otherwise."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(_ZIP_MAGIC):
        return _zip_format(path)
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "torch_save"  # torch.save(..., _use_new_zipfile_serialization=False): raw pickle
    if head[:1] == b"\x08" and _is_onnx(path):
        return "onnx"
    raise ModelLoadError(f"{path}: {_describe_unknown(path, head)}, not a model advisor can read",
                         "supported: .pt2 (torch.export), .onnx, TorchScript, a state_dict with "
                         "--arch, or pkg.module:factory")


def _zip_format(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise ModelLoadError(f"{path} is truncated or corrupt (an incomplete zip archive: {e})",
                             "the file was cut short while saving or copying: copy or export "
                             "it again") from e
    rel = [n.split("/", 1)[1] if "/" in n else n for n in names]
    if "archive_format" in rel or any(r.startswith("models/") and r.endswith(".json")
                                      for r in rel) or "serialized_exported_program.json" in rel:
        return "pt2"
    if any(r.startswith("code/") for r in rel) or "constants.pkl" in rel:
        return "torchscript"
    if "data.pkl" in rel:
        return "torch_save"
    raise ModelLoadError(f"{path} is a zip archive but not a PyTorch model (no exported program, "
                         "TorchScript code or torch.save pickle inside)",
                         "pass the .pt2/.onnx/.pt file itself, not an archive holding it")


def _is_onnx(path: Path) -> bool:
    try:
        import onnx
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return False
    return len(model.graph.node) > 0


def _describe_unknown(path: Path, head: bytes) -> str:
    for magic, what in _KNOWN_NON_MODELS:
        if head.startswith(magic):
            return f"this is {what}"
    with open(path, "rb") as f:
        sample = f.read(4096)
    try:
        sample.decode("utf-8")
        return "this is a text file"
    except UnicodeDecodeError:
        return "unrecognised binary content"


# ---- loaders per format -----------------------------------------------------------------------

def _load_factory_spec(spec: str) -> LoadedModel:
    module = _build(import_factory(spec), {}, spec)
    default = None
    if spec in FACTORY_ALLOWLIST:
        from advisor.examples.build import INPUT_SHAPE
        default = INPUT_SHAPE
    return LoadedModel(None, "factory", module, None, default, {"arch": spec},
                       _has_layers(module))


def _build(factory: Callable[..., Any], kwargs: dict, spec: str) -> nn.Module:
    try:
        module = factory(**kwargs)
    except Exception as e:
        raise ModelLoadError(f"calling {spec}({_kwargs_text(kwargs)}) failed: "
                             f"{type(e).__name__}: {_first_line(e)}",
                             "the factory must build the model without required arguments") from e
    if not isinstance(module, nn.Module):
        raise ModelLoadError(f"{spec} returned a {type(module).__name__}, not an nn.Module",
                             "name a function or class that returns an nn.Module")
    return module.eval()


def _load_torch_save(path: Path, *, arch, trust_pickle, input_shape) -> LoadedModel:
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
    module = _build(import_factory(arch), {}, arch)
    _load_weights(module, state, f"{path} does not fit --arch {arch}")
    return LoadedModel(path, "state_dict", module, None, None, {"arch": arch},
                       _has_layers(module))


def _torch_load(path: Path, trust_pickle: bool) -> Any:
    """torch.load with weights_only=True; full unpickling only when trusted."""
    try:
        with _quiet():
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
        with _quiet():
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


def _load_weights(module: nn.Module, state: dict, what: str) -> None:
    """Strict load_state_dict; strips a DataParallel 'module.' prefix if every key has it."""
    if all(k.startswith("module.") for k in state) and \
            not any(k.startswith("module.") for k in module.state_dict()):
        state = {k[len("module."):]: v for k, v in state.items()}
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


def _load_torchscript(path: Path, *, arch, trust_pickle, input_shape) -> LoadedModel:
    extra = {META_FILE: ""}  # advisor.export.save_torchscript records the input shape here
    try:
        with _quiet():
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as e:
        raise ModelLoadError(f"{path} is a TorchScript archive that cannot be loaded: "
                             f"{_first_line(e)}", "save it again, or export a .pt2") from e
    meta = _pt2_metadata(extra.get(META_FILE), path)
    shape = _recorded_shape(meta, path, input_shape)
    return LoadedModel(path, "torchscript", module.eval(), None, shape, meta, False)


def _load_onnx(path: Path, *, arch, trust_pickle, input_shape) -> LoadedModel:
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
    return LoadedModel(path, "onnx", None, path, _onnx_shape(inputs[0]),
                       {"params": params, "opset": opsets, "input_name": inputs[0].name}, False)


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


# ---- .pt2 ---------------------------------------------------------------------------------------

def _load_pt2(path: Path, *, arch, trust_pickle, input_shape) -> LoadedModel:
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
        with _quiet():
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
        kwargs = (meta.get("arch_kwargs") or {}) if spec == meta.get("arch") else {}
        module = _rebuild_from_ep(ep, spec, kwargs, shape or input_shape, strict=bool(arch),
                                  path=path, notes=meta.setdefault("notes", []))
        if module is not None:
            loaded.module, loaded.editable = module, _has_layers(module)
            meta["arch"] = spec
            return loaded
    loaded.module = _graph_module(ep)
    return loaded


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
        with torch.inference_mode(), _quiet():
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
    with _quiet():
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


_LOADERS: dict[str, Callable[..., LoadedModel]] = {
    "pt2": _load_pt2, "torchscript": _load_torchscript, "torch_save": _load_torch_save,
    "onnx": _load_onnx,
}


# ---- the forward check ----------------------------------------------------------------------

def _check_forward(loaded: LoadedModel, spec: str) -> None:
    """Run the model once on zeros of its input shape; a rejection is an InputShapeError."""
    shape = tuple(loaded.input_shape)
    x = torch.zeros(shape)
    try:
        if loaded.module is not None:
            with torch.inference_mode(), _quiet():
                out = loaded.module(x)
        else:
            from advisor.export import onnx_session, run_onnx
            out = torch.from_numpy(run_onnx(onnx_session(loaded.onnx_path), x))
    except Exception as e:
        raise InputShapeError(f"{spec} rejects input shape {_shape_text(shape)}: "
                              f"{_model_message(e)}",
                              f"pass the shape the model expects, e.g. {SHAPE_HINT}") from e
    if not isinstance(out, torch.Tensor):
        raise ModelLoadError(f"{spec} returns a {type(out).__name__}; advisor needs a model that "
                             "returns one tensor of logits", "wrap the model so that forward "
                             "returns the logits tensor")


# ---- utilities --------------------------------------------------------------------------------

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _has_layers(module: nn.Module) -> bool:
    return any(isinstance(m, _LAYERS) for m in module.modules())


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


@contextlib.contextmanager
def _quiet():
    """torch.export/jit loading logs and warns (deprecations, 'legacy format'); keep output clean."""
    loggers = [logging.getLogger(n) for n in ("torch.export", "torch._export", "torch.jit")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)
