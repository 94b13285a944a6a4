"""Load a model from any supported format — the one place in advisor that unpickles (opt-in).

The format is recognised by content (magic bytes, zip member names), not by the extension:

| what the user gives                         | format          | module                    | editable |
|---------------------------------------------|-----------------|---------------------------|----------|
| torch.export `.pt2` naming an allowlisted   | `pt2`           | eager module rebuilt from | yes      |
| architecture, or any `.pt2` plus `--arch`   |                 | the factory + the weights |          |
| any other `.pt2`                            | `pt2`           | lifted into layers        | yes      |
|                                             |                 | (`advisor.lift`), else    | (else no)|
|                                             |                 | `ExportedProgram.module()`|          |
| TorchScript archive (`torch.jit.save`)      | `torchscript`   | `torch.jit.load`          | no       |
| state_dict (`torch.save(m.state_dict())`)   | `state_dict`    | `--arch` factory + weights| yes      |
|   plus `--arch pkg.module:factory`          |                 |                           |          |
| `pkg.module:factory` (architecture in code) | `factory`       | factory() (its own init)  | yes      |
| whole pickled module (`torch.save(model)`)  | `pickle`        | only with `--trust-pickle`| yes      |
| ONNX (`.onnx`)                              | `onnx`          | converted into layers     | yes      |
|                                             |                 | (`advisor.onnx_lift`),    | (else no)|
|                                             |                 | else None; `onnx_path` set|          |

Where it lives: format detection in `advisor.model_formats`; the torch.save, TorchScript and ONNX
loaders in `advisor.model_loaders`; the `.pt2` loader in `advisor.model_pt2` (its safety scan in
`advisor.pt2_safety`); shared pieces (`LoadedModel`, the allowlist, spec import) in
`advisor.model_common`. This module is the public entry point and re-exports them.

"Editable" means the module has real layers (`nn.Conv2d`, `nn.Linear`) that structural passes can
rewrite; a torch.export graph holds aten calls only until it is lifted.

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

from pathlib import Path
from typing import Callable

import torch

from advisor.errors import InputShapeError, ModelLoadError
from advisor.model_common import (FACTORY_ALLOWLIST, META_FILE, PT2_HINT, SHAPE_HINT,  # noqa: F401
                                  LoadedModel, _build, _has_layers, _model_message, _shape_text,
                                  import_factory, import_object, is_object_spec,
                                  parse_input_shape)
from advisor.model_formats import detect_format
from advisor.model_loaders import load_onnx, load_torch_save, load_torchscript
from advisor.model_pt2 import load_pt2
from advisor.pt2_safety import pt2_hazards
from advisor.quiet import quiet

__all__ = ["LoadedModel", "load_model", "parse_input_shape", "import_factory", "import_object",
           "model_summary", "detect_format", "pt2_hazards", "FACTORY_ALLOWLIST"]


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
               trust_pickle: bool = False, arch_kwargs: dict | str | None = None) -> LoadedModel:
    """Load `spec` (a file or 'pkg.module:factory'), resolve its input shape and check that one
    forward pass with zeros of that shape runs.

    `arch_kwargs` (a dict, or its JSON text as `--arch-kwargs` gives it; JSON literals only) are
    the keyword arguments of the architecture factory: `spec` itself when it is
    `pkg.module:factory`, else `--arch`. They are recorded in `metadata["arch_kwargs"]`.

    An explicit `input_shape` wins over the one recorded in the artefact (the examples are
    fully convolutional, so a 32x32 model can be measured at 224x224).
    """
    spec = str(spec)
    shape = _normalise_shape(input_shape)
    kwargs = parse_arch_kwargs(arch_kwargs)
    if is_object_spec(spec):
        loaded = _load_factory_spec(spec, kwargs or {})
    else:
        path = _existing_file(spec)
        fmt = detect_format(path)
        if kwargs is not None and not arch and fmt != "pt2":
            raise ModelLoadError("--arch-kwargs needs --arch (the factory they are passed to)",
                                 "e.g. --arch torchvision.models:resnet18 --arch-kwargs "
                                 "'{\"num_classes\": 10}'")
        loaded = _LOADERS[fmt](path, arch=arch, trust_pickle=trust_pickle, input_shape=shape,
                               arch_kwargs=kwargs)
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

def _load_factory_spec(spec: str, kwargs: dict) -> LoadedModel:
    module = _build(import_factory(spec), kwargs, spec)
    default = None
    if spec in FACTORY_ALLOWLIST:
        from advisor.examples.build import INPUT_SHAPE
        default = INPUT_SHAPE
    meta = {"arch": spec, **({"arch_kwargs": dict(kwargs)} if kwargs else {})}
    return LoadedModel(None, "factory", module, None, default, meta, _has_layers(module))


def parse_arch_kwargs(value: dict | str | None) -> dict | None:
    """`--arch-kwargs` as a dict: a JSON object of literals (numbers, strings, booleans, null,
    lists, objects) — never code. None stays None (the factory's defaults)."""
    import json

    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise ModelLoadError(f"--arch-kwargs is not valid JSON ({e.msg} at column "
                                 f"{e.colno}): {value[:80]}",
                                 "give a JSON object, e.g. '{\"num_classes\": 10}'") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ModelLoadError(f"--arch-kwargs must be a JSON object of keyword arguments, got "
                             f"{type(value).__name__}", "e.g. '{\"num_classes\": 10}'")
    return value


_LOADERS: dict[str, Callable[..., LoadedModel]] = {
    "pt2": load_pt2, "torchscript": load_torchscript, "torch_save": load_torch_save,
    "onnx": load_onnx,
}


# ---- the forward check ----------------------------------------------------------------------

def _check_forward(loaded: LoadedModel, spec: str) -> None:
    """Run the model once on zeros of its input shape; a rejection is an InputShapeError."""
    shape = tuple(loaded.input_shape)
    x = torch.zeros(shape)
    try:
        if loaded.module is not None and loaded.onnx_path is None:
            with torch.inference_mode(), quiet(stdout=False):
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
