"""Checks of data against the model and the host, and its provenance in plan.json.

`label_range`/`check_labels` refuse labels the model cannot predict (negative, or beyond its
output width), reading them without a pass over the inputs for tensor files and image folders;
`check_input_size` bounds an input shape before anything allocates it; `absolute_spec` and
`data_fingerprint` are what plan.json records (absolute paths and a sha256), so `advisor apply`
run elsewhere finds the data and notices when it changed.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset, TensorDataset

from advisor.errors import DataError
from advisor.image_folder import UNLABELLED, ImageFolderData


def label_range(loader) -> tuple[int, int, int] | None:
    """(number of labelled samples, smallest label, largest label) of a loader; None when it
    holds no labels (all -1). Tensor data and image folders are read without a pass over the
    inputs; other loaders (hooks) are iterated once, which also checks every batch."""
    ys = _labels_of(getattr(loader, "dataset", None))
    if ys is None:
        parts = [y.flatten() for _, y in loader]
        ys = torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64)
    ys = ys[ys != UNLABELLED]
    if not len(ys):
        return None
    return len(ys), int(ys.min()), int(ys.max())


def _labels_of(dataset) -> torch.Tensor | None:
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        return dataset.tensors[1].flatten().long()
    if isinstance(dataset, ImageFolderData):
        return torch.tensor([lab for _, lab in dataset.samples], dtype=torch.int64)
    if isinstance(dataset, Subset):
        inner = _labels_of(dataset.dataset)
        return None if inner is None else inner[torch.as_tensor(list(dataset.indices),
                                                                dtype=torch.int64)]
    return None


def check_labels(loaders: dict[str, Any], num_classes: int | None,
                 specs: dict[str, str | None] | None = None) -> None:
    """Refuse labels the model cannot predict: negative, or >= its output width.

    `loaders`: {role: DataLoader, a list of them (the parts of one split dataset) or None}
    (e.g. "--data", "--train-data"); `num_classes`: the width of the model's output (None:
    unknown, only negative labels are refused)."""
    for role, loader in loaders.items():
        parts = [x for x in (loader if isinstance(loader, (list, tuple)) else [loader])
                 if x is not None]
        found = [r for r in map(label_range, parts) if r is not None]
        if not found:
            continue
        lo, hi = min(r[1] for r in found), max(r[2] for r in found)
        where = f"{role} {specs.get(role)}" if specs and specs.get(role) else role
        if lo < 0:
            raise DataError(f"{where}: labels range {lo}..{hi}, but class indices cannot be "
                            "negative", "labels must be class indices 0..K-1: map your label "
                            "values to the model's class indices")
        if num_classes is not None and hi >= num_classes:
            raise DataError(f"{where}: labels range {lo}..{hi} but the model outputs "
                            f"{num_classes} classes (0..{num_classes - 1})",
                            "map the labels to the model's class indices (e.g. subtract the "
                            "offset, or use the class order the model was trained with), or "
                            "pass the data of this model")


MAX_INPUT_ELEMENTS = 2 ** 31
INPUT_MEMORY_SHARE = 0.125


def check_input_size(shape, *, batch_size: int | None = None, bytes_per_element: int = 4
                     ) -> None:
    """Refuse an input shape whose one tensor is absurd before anything allocates it: more than
    2**31 elements, or (float32) more than an eighth of this host's memory. Every trial holds a
    few such tensors plus the activations, so a larger one cannot be measured here.

    `shape`: a tuple or the `--input-shape` text (None: nothing to check); `batch_size`, when
    given, replaces the first dimension (what `profile --batch-size` will allocate)."""
    from advisor.errors import InputShapeError
    from advisor.model_io import parse_input_shape

    if shape is None or shape == "":
        return
    dims = parse_input_shape(shape if isinstance(shape, str) else
                             ",".join(str(int(d)) for d in shape))
    if batch_size is not None and dims:
        dims = (int(batch_size),) + tuple(dims[1:])
    elements = math.prod(dims)
    text = ",".join(map(str, dims))
    if elements > MAX_INPUT_ELEMENTS:
        raise InputShapeError(f"input shape {text} has {elements:,} elements per tensor, more "
                              f"than the {MAX_INPUT_ELEMENTS:,} advisor accepts",
                              "pass the shape the model is deployed with, e.g. 1,3,224,224")
    memory = _host_memory_bytes()
    need = elements * bytes_per_element
    if memory and need > INPUT_MEMORY_SHARE * memory:
        raise InputShapeError(f"input shape {text} needs {need / 2 ** 30:.1f} GiB per tensor, "
                              f"more than an eighth of this host's {memory / 2 ** 30:.1f} GiB",
                              "pass the shape the model is deployed with, e.g. 1,3,224,224")


def _host_memory_bytes() -> int | None:
    try:
        import os
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def absolute_spec(spec):
    """A data spec made independent of the working directory: files and folders become absolute
    paths; `pkg.module:function` hooks (and anything that is not a path) stay as they are."""
    from advisor.model_io import is_object_spec

    if spec is None or not isinstance(spec, (str, Path)):
        return spec
    text = str(spec)
    if is_object_spec(text):
        return text
    path = Path(text).expanduser()
    return str(path.resolve()) if path.exists() else text


def data_fingerprint(spec) -> str | None:
    """sha256 of a data file's bytes; of a folder, of its sorted file list — relative path, size
    and mtime (ns) of each file below it, not the contents (a big image folder is not re-read);
    None for hooks and missing paths. Used by `advisor apply` to notice data that changed since
    `analyze` recorded it in plan.json."""
    import hashlib
    from advisor.model_io import is_object_spec

    if spec is None or not isinstance(spec, (str, Path)) or is_object_spec(str(spec)):
        return None
    path = Path(str(spec)).expanduser()
    from advisor.fileio import sha256_file

    h = hashlib.sha256()
    try:
        if path.is_file():
            return sha256_file(path)
        if path.is_dir():
            h.update(b"advisor-dir-v1\n")
            for f in sorted(q for q in path.rglob("*") if q.is_file()):
                st = f.stat()
                h.update(f"{f.relative_to(path).as_posix()}\0{st.st_size}\0"
                         f"{st.st_mtime_ns}\n".encode())
            return h.hexdigest()
    except OSError:
        return None
    return None
