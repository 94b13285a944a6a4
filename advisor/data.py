"""Evaluation, calibration and training data: the formats advisor reads and how.

`load_data(spec)` returns a `torch.utils.data.DataLoader` yielding `(inputs, labels)` batches —
inputs float32 `N×C×H×W` (or whatever the model takes), labels int64 `N` class indices. The
formats:

1. **`.pt` file** — `torch.save({"inputs": x, "labels": y}, "val.pt")`. Read with
   `torch.load(weights_only=True)`, so it holds tensors only (never pickled code). Keys
   `x`/`y` (also `images`, `image`, `pixel_values`, `data` / `targets`, `target`, `label`)
   are accepted, and so is a tuple `(inputs, labels)` or a bare inputs tensor (unlabelled).
2. **`.npz` file** — `numpy.savez("val.npz", inputs=x, labels=y)`, same keys; object arrays are
   refused (`allow_pickle=False`).
3. **An image folder** in the ImageFolder layout `root/<class name>/<image>`: classes are the
   sub-folder names in sorted order, so label *i* is the *i*-th name — it must be the order the
   model was trained with. Images (PNG, JPEG, BMP, GIF, WebP, TIFF, PPM) are read with Pillow
   (`advisor.image_folder`), converted to RGB (grey when the input shape has one channel) and
   prepared by a `Preprocess` (`advisor.preprocess`): by default resized to the input shape's
   H×W and scaled to [0, 1]; `--preprocess imagenet` resizes the shorter side to 256, center
   crops 224 and normalises with the ImageNet mean/std, as torchvision's recipe does.
   **Preprocessing must match training.** A folder of images without class sub-folders is
   accepted as unlabelled data.
4. **`pkg.module:function`** — a hook called with no arguments that returns a `DataLoader`, a
   `Dataset`, or an `(inputs, labels)` pair of tensors: for custom preprocessing or formats.
   Its batches may be `(x, y)` pairs, dicts with the keys above, or bare inputs (unlabelled).

Tensor inputs of dtype uint8 are scaled to [0, 1]; the preprocessing's `mean`/`std`, when
given, apply to every format. With `labelled=False` (calibration, unlabelled distillation) labels may be absent and
read as -1. `split_loader` carves seeded validation/test parts out of one loader, for when only
one data file is given.

Inputs must be finite: NaN/inf anywhere is a DataError naming the file and the first bad sample
(tensor files when read, hook batches when iterated).

Where it lives: this module is the entry point (`load_data`, `split_loader`); tensor files in
`advisor.data_tensors`, hooks in `advisor.data_hooks`, image folders in `advisor.image_folder`,
preprocessing in `advisor.preprocess`, and the checks against the model and the host plus what
plan.json records (`check_labels`, `check_input_size`, `absolute_spec`, `data_fingerprint`) in
`advisor.data_checks`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, RandomSampler, Subset, \
    TensorDataset

from advisor.data_hooks import _from_hook
from advisor.data_tensors import _check_tensors, _loader, _read_npz, _read_pt, _split_object
from advisor.errors import DataError
from advisor.image_folder import ImageFolderData
from advisor.preprocess import Preprocess

__all__ = ["load_data", "split_loader"]

def load_data(spec: str, *, batch_size: int = 64, input_shape: Sequence[int] | None = None,
              labelled: bool = True, shuffle: bool = False, seed: int = 0,
              preprocess: Preprocess | None = None,
              mean: Sequence[float] | float | None = None,
              std: Sequence[float] | float | None = None) -> DataLoader:
    """A DataLoader of `(float32 inputs, int64 labels)` batches from `spec` (see module doc).

    `preprocess` prepares images and normalises every format; `mean`/`std` (a shorthand for
    normalisation alone) override its own."""
    from advisor.model_io import is_object_spec

    spec = str(spec)
    shape = tuple(int(d) for d in input_shape) if input_shape is not None else None
    norm = _with_normalisation(preprocess or Preprocess(), mean, std)
    if is_object_spec(spec):
        return _from_hook(spec, batch_size, labelled, shuffle, seed, norm)
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"data not found: {spec}", "check the path (.pt, .npz, an image folder, "
                        "or pkg.module:function)")
    if path.is_dir():
        dataset = ImageFolderData(path, shape, labelled, norm)
        return _loader(dataset, batch_size, shuffle, seed)
    if path.stat().st_size == 0:
        raise DataError(f"{spec} is empty (0 bytes)", "write the data file again")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        inputs, labels = _read_npz(path)
    elif suffix in (".pt", ".pth"):
        inputs, labels = _split_object(_read_pt(path), path)
    else:
        raise DataError(f"{spec}: unsupported data file type {suffix or '(no extension)'!r}",
                        "use a .pt or .npz file with 'inputs' and 'labels', an image folder, "
                        "or pkg.module:function")
    inputs, labels = _check_tensors(inputs, labels, path, shape, labelled)
    return _loader(TensorDataset(norm(inputs), labels), batch_size, shuffle, seed)


def split_loader(loader_or_tensors, fractions: Sequence[float] = (0.5, 0.5), seed: int = 0
                 ) -> tuple[DataLoader, ...]:
    """Seeded, disjoint parts of one dataset (e.g. validation and held-out test halves).

    Accepts a DataLoader over an indexable dataset (split by index, batch size and shuffling
    kept) or an `(inputs, labels)` pair; other loaders (hooks yielding batches) are read into
    memory first. Fractions must be positive and sum to at most 1.
    """
    fractions = tuple(float(f) for f in fractions)
    if not fractions or any(f <= 0 for f in fractions) or sum(fractions) > 1 + 1e-9:
        raise DataError(f"invalid split fractions {fractions}",
                        "give positive fractions that sum to at most 1, e.g. (0.5, 0.5)")
    dataset, batch_size, shuffle = _as_indexable(loader_or_tensors)
    n = len(dataset)
    counts = _split_counts(n, fractions)
    if min(counts) == 0:
        raise DataError(f"{n} samples are too few to split into {len(fractions)} non-empty parts",
                        "provide more data, or separate --data and --test-data files")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    parts, start = [], 0
    for k, count in enumerate(counts):
        subset = Subset(dataset, sorted(order[start:start + count]))
        parts.append(_loader(subset, batch_size, shuffle, seed + k))
        start += count
    return tuple(parts)


# ---- shared -----------------------------------------------------------------------------------

def _with_normalisation(pre: Preprocess, mean, std) -> Preprocess:
    import dataclasses

    tup = lambda v: None if v is None else tuple(float(c) for c in
                                                 (v if isinstance(v, (list, tuple)) else [v]))
    if mean is None and std is None:
        return pre
    return dataclasses.replace(pre, mean=tup(mean) if mean is not None else pre.mean,
                               std=tup(std) if std is not None else pre.std)


def _as_indexable(obj) -> tuple[Dataset, int, bool]:
    if isinstance(obj, (tuple, list)) and len(obj) == 2 and \
            all(isinstance(t, torch.Tensor) for t in obj):
        x, y = obj
        if len(x) != len(y):
            raise DataError(f"{len(x)} inputs but {len(y)} labels", "one label per input")
        return TensorDataset(x, y), 64, False
    if not isinstance(obj, DataLoader):
        raise DataError(f"cannot split a {type(obj).__name__}",
                        "pass a DataLoader or an (inputs, labels) pair")
    shuffle = isinstance(obj.sampler, RandomSampler)
    batch_size = obj.batch_size or 64
    if isinstance(obj.dataset, IterableDataset):  # batches from a hook: read them into memory
        batches = list(obj)
        if not batches:
            raise DataError("cannot split empty data", "provide at least two samples")
        xs, ys = zip(*batches)
        return TensorDataset(torch.cat(xs), torch.cat(ys)), max(1, len(xs[0])), shuffle
    return obj.dataset, batch_size, shuffle


def _split_counts(n: int, fractions: tuple[float, ...]) -> list[int]:
    """Sizes per fraction; when they sum to 1 every sample is used (rounding goes to the last)."""
    counts = [int(math.floor(n * f)) for f in fractions]
    if abs(sum(fractions) - 1.0) < 1e-9:
        counts[-1] = n - sum(counts[:-1])
    return counts
