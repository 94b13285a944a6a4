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
   model was trained with. Images (PNG, JPEG, BMP, GIF, WebP, TIFF, PPM) are read with Pillow,
   converted to RGB (grey when the input shape has one channel), resized to the input shape's
   H×W when one is known, and scaled to [0, 1]. **Normalisation must match training**: pass
   `mean`/`std` (per channel) to apply `(x - mean) / std`. A folder of images without class
   sub-folders is accepted as unlabelled data.
4. **`pkg.module:function`** — a hook called with no arguments that returns a `DataLoader`, a
   `Dataset`, or an `(inputs, labels)` pair of tensors: for custom preprocessing or formats.
   Its batches may be `(x, y)` pairs, dicts with the keys above, or bare inputs (unlabelled).

Tensor inputs of dtype uint8 are scaled to [0, 1]; `mean`/`std`, when given, apply to every
format. With `labelled=False` (calibration, unlabelled distillation) labels may be absent and
read as -1. `split_loader` carves seeded validation/test parts out of one loader, for when only
one data file is given.

Inputs must be finite: NaN/inf anywhere is a DataError naming the file and the first bad sample
(tensor files when read, hook batches when iterated). `check_labels` refuses labels the model
cannot predict (negative, or beyond its output width); `label_range` reads them without a pass
over the inputs for tensor files and image folders. `check_input_size` bounds an input shape
before anything allocates it. `absolute_spec`/`data_fingerprint` are what plan.json records:
absolute paths and a sha256 (of a file's bytes; of a folder's sorted listing with sizes and
mtimes), so `advisor apply` run elsewhere finds the data and notices when it changed.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, RandomSampler, Subset, \
    TensorDataset

from advisor.errors import DataError

__all__ = ["load_data", "split_loader", "ImageFolderData", "IMAGE_SUFFIXES", "label_range",
           "check_labels", "check_input_size", "absolute_spec", "data_fingerprint"]

INPUT_KEYS = ("inputs", "x", "images", "image", "pixel_values", "data")
LABEL_KEYS = ("labels", "y", "targets", "target", "label")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff",
                            ".ppm", ".pgm"})
UNLABELLED = -1


def load_data(spec: str, *, batch_size: int = 64, input_shape: Sequence[int] | None = None,
              labelled: bool = True, shuffle: bool = False, seed: int = 0,
              mean: Sequence[float] | float | None = None,
              std: Sequence[float] | float | None = None) -> DataLoader:
    """A DataLoader of `(float32 inputs, int64 labels)` batches from `spec` (see module doc)."""
    from advisor.model_io import is_object_spec

    spec = str(spec)
    shape = tuple(int(d) for d in input_shape) if input_shape is not None else None
    norm = _Normalise(mean, std)
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


# ---- tensors (.pt / .npz) ------------------------------------------------------------------

def _read_pt(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        if "Unsupported global" in str(e):
            raise DataError(f"{path} contains pickled Python objects, not only tensors: refused",
                            "save plain tensors: torch.save({'inputs': x, 'labels': y}, path)"
                            ) from e
        raise DataError(f"{path} cannot be read as a torch.save file: {first[:200]}",
                        "write it with torch.save({'inputs': x, 'labels': y}, path)") from e


def _read_npz(path: Path) -> tuple[Any, Any]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as e:
        raise DataError(f"{path} cannot be read as .npz: {type(e).__name__}: "
                        f"{str(e).splitlines()[0][:200] if str(e) else ''}",
                        "write it with numpy.savez(path, inputs=x, labels=y) (numeric arrays "
                        "only)") from e
    return _split_object(arrays, path)


def _split_object(obj: Any, path: Path) -> tuple[Any, Any]:
    """(inputs, labels-or-None) from a dict, a tuple/list or a bare tensor."""
    if isinstance(obj, dict):
        x_key = next((k for k in INPUT_KEYS if k in obj), None)
        y_key = next((k for k in LABEL_KEYS if k in obj), None)
        if x_key is None:
            raise DataError(f"{path} has keys {sorted(map(str, obj))[:8]} but no inputs",
                            "name the inputs 'inputs' (or 'x') and the labels 'labels' (or 'y')")
        return obj[x_key], obj[y_key] if y_key else None
    if isinstance(obj, (tuple, list)) and 1 <= len(obj) <= 2:
        return obj[0], obj[1] if len(obj) == 2 else None
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        return obj, None
    raise DataError(f"{path} holds a {type(obj).__name__}; expected a dict with 'inputs' and "
                    "'labels', an (inputs, labels) tuple or an inputs tensor",
                    "save {'inputs': x, 'labels': y}")


def _check_tensors(inputs, labels, path: Path, shape, labelled: bool
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    x = _as_tensor(inputs, path, "inputs")
    if x.ndim == 0 or len(x) == 0:
        raise DataError(f"{path} holds no samples (inputs of shape {tuple(x.shape)})",
                        "write a non-empty dataset")
    x = _to_float(x, path)
    _check_finite(x, path)
    if shape is not None and tuple(x.shape[1:]) != tuple(shape[1:]):
        raise DataError(f"{path}: samples have shape {tuple(x.shape[1:])} but the model takes "
                        f"{tuple(shape[1:])}", _shape_hint(tuple(x.shape[1:]), tuple(shape[1:])))
    y = _labels_for(labels, len(x), path, labelled)
    return x, y


def _as_tensor(value, path: Path, what: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise DataError(f"{path}: {what} is an object array", "store numeric arrays")
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise DataError(f"{path}: {what} is a {type(value).__name__}, not a tensor or array",
                        f"store {what} as a tensor or numpy array")
    return value


def _to_float(x: torch.Tensor, path: Path) -> torch.Tensor:
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    if x.is_floating_point():
        return x.float()
    raise DataError(f"{path}: inputs have dtype {x.dtype}, expected float or uint8 images",
                    "store inputs as float32")


def _check_finite(x: torch.Tensor, path: Path) -> None:
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        rows = bad.reshape(len(x), -1).any(1) if x.ndim >= 1 and len(x) else bad.flatten()
        first = int(rows.nonzero()[0, 0]) if rows.any() else 0
        kinds = "/".join(k for k, m in (("NaN", torch.isnan(x)), ("inf", torch.isinf(x)))
                         if bool(m.any()))
        raise DataError(f"{path}: inputs contain non-finite values ({kinds}) in "
                        f"{int(rows.sum())} of {len(x)} samples (first: sample {first})",
                        "remove or repair those samples (e.g. torch.nan_to_num) before passing "
                        "the data")


def _labels_for(labels, n: int, path: Path, labelled: bool) -> torch.Tensor:
    if labels is None:
        if labelled:
            raise DataError(f"{path} has inputs but no labels",
                            "add labels ('labels' or 'y' key) to measure accuracy")
        return torch.full((n,), UNLABELLED, dtype=torch.int64)
    y = _as_tensor(labels, path, "labels")
    if y.ndim != 1:
        raise DataError(f"{path}: labels have shape {tuple(y.shape)}, expected one class index "
                        "per sample", "store labels as a 1-D integer tensor (not one-hot)")
    if len(y) != n:
        raise DataError(f"{path}: {n} inputs but {len(y)} labels", "store one label per input")
    if y.is_floating_point():
        if not torch.equal(y, y.round()):
            raise DataError(f"{path}: labels are fractional", "store integer class indices")
    elif y.dtype == torch.bool or y.is_complex():
        raise DataError(f"{path}: labels have dtype {y.dtype}", "store integer class indices")
    y = y.long()
    if labelled and bool((y < 0).any()):
        raise DataError(f"{path}: labels contain negative values", "labels are class indices "
                        "0..K-1")
    return y


def _shape_hint(have: tuple, want: tuple) -> str:
    if len(have) == 3 and have[-1] == want[0] and have[:2] == want[1:]:
        return "the inputs are channels-last: store them as N,C,H,W (x.permute(0, 3, 1, 2))"
    return "store inputs at the model's input size, or pass the matching --input-shape"


# ---- image folders ----------------------------------------------------------------------------

class ImageFolderData(Dataset):
    """`root/<class>/<image>` read lazily with Pillow; every image is checked when built.

    Label i is the i-th class folder name in sorted order (`.classes`). A folder without class
    sub-folders gives unlabelled samples (label -1) when `labelled=False`.
    """

    def __init__(self, root: Path, input_shape: tuple[int, ...] | None, labelled: bool,
                 normalise: "_Normalise"):
        self.root = Path(root)
        self.classes, self.samples, sizes = _scan_folder(self.root, labelled)
        channels = input_shape[1] if input_shape is not None and len(input_shape) == 4 else 3
        if channels not in (1, 3):
            raise DataError(f"{root}: images can be read as 1 or 3 channels, the input shape "
                            f"asks for {channels}", "use a pkg.module:function data hook")
        self.mode = "L" if channels == 1 else "RGB"
        self.size = (input_shape[3], input_shape[2]) if input_shape is not None and \
            len(input_shape) == 4 else None
        self.size = self.size or _common_size(sizes, self.root)
        self.normalise = normalise

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        img = _open_image(path)
        with img:
            img = img.convert(self.mode)
            if img.size != self.size:
                img = img.resize(self.size, resample=_bilinear())
            arr = np.asarray(img, dtype=np.float32) / 255.0
        x = torch.from_numpy(arr.copy())
        x = x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1)
        return self.normalise(x.unsqueeze(0))[0].contiguous(), label


def _scan_folder(root: Path, labelled: bool
                 ) -> tuple[list[str], list[tuple[Path, int]], dict[tuple[int, int], Path]]:
    """(class names, [(image, label)], {size: first image of that size}); verifies each image."""
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if class_dirs:
        classes = [p.name for p in class_dirs]
        samples = [(f, i) for i, d in enumerate(class_dirs) for f in _images_in(d)]
    elif labelled:
        raise DataError(f"{root} has no class sub-folders, so the images have no labels",
                        "arrange it as root/<class name>/<image> (classes in training order)")
    else:
        classes, samples = [], [(f, UNLABELLED) for f in _images_in(root)]
    if not samples:
        raise DataError(f"{root} contains no images ({', '.join(sorted(IMAGE_SUFFIXES))})",
                        "point --data at the folder whose sub-folders hold the images")
    sizes: dict[tuple[int, int], Path] = {}
    for f, _ in samples:
        sizes.setdefault(_verify_image(f), f)
    return classes, samples, sizes


def _images_in(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and
                  f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."))


def _open_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"{path} is not a readable image ({type(e).__name__})",
                        "remove or replace the file") from e


def _verify_image(path: Path) -> tuple[int, int]:
    """Decode the image fully once, so a corrupt file fails here with its name, not mid-run."""
    img = _open_image(path)
    try:
        with img, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.load()
            return img.size
    except Exception as e:
        raise DataError(f"{path} is not a readable image (truncated or corrupt: "
                        f"{str(e).splitlines()[0][:120] if str(e) else type(e).__name__})",
                        "remove or replace the file") from e


def _common_size(sizes: dict[tuple[int, int], Path], root: Path) -> tuple[int, int]:
    if len(sizes) > 1:
        (a, fa), (b, fb) = list(sizes.items())[:2]
        raise DataError(f"{root}: images differ in size ({fa.name} is {a[0]}x{a[1]}, {fb.name} "
                        f"is {b[0]}x{b[1]}) and no input shape is known to resize them to",
                        "pass --input-shape 1,3,H,W")
    return next(iter(sizes))


def _bilinear():
    from PIL import Image
    return Image.Resampling.BILINEAR


# ---- hooks ------------------------------------------------------------------------------------

def _from_hook(spec: str, batch_size: int, labelled: bool, shuffle: bool, seed: int,
               norm: "_Normalise") -> DataLoader:
    from advisor.model_io import import_object

    fn = import_object(spec, DataError)
    if not callable(fn):
        raise DataError(f"{spec} is a {type(fn).__name__}, not a function",
                        "name a function returning a DataLoader, Dataset or (inputs, labels)")
    try:
        obj = fn()
    except Exception as e:
        raise DataError(f"data hook {spec}() failed: {type(e).__name__}: "
                        f"{str(e).splitlines()[0][:200] if str(e) else ''}",
                        "the hook must run without arguments") from e
    if isinstance(obj, DataLoader):
        dataset = _HookBatches(obj, labelled, norm, spec)
        dataset.check_first()
        return DataLoader(dataset, batch_size=None)
    if isinstance(obj, Dataset):
        _check_item(obj, spec)
        return DataLoader(obj, batch_size=batch_size, shuffle=shuffle,
                          generator=torch.Generator().manual_seed(seed) if shuffle else None,
                          collate_fn=_Collate(labelled, norm, spec))
    if isinstance(obj, (tuple, list, torch.Tensor, np.ndarray, dict)):
        inputs, labels = _split_object(obj, Path(spec))
        x, y = _check_tensors(inputs, labels, Path(spec), None, labelled)
        return _loader(TensorDataset(norm(x), y), batch_size, shuffle, seed)
    raise DataError(f"data hook {spec}() returned a {type(obj).__name__}",
                    "return a DataLoader, a Dataset or an (inputs, labels) pair")


def _as_pair(batch: Any, labelled: bool, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise one batch (pair, dict or bare inputs) to (float32 inputs, int64 labels)."""
    if isinstance(batch, dict):
        batch = _split_object(batch, Path(source))
    elif isinstance(batch, torch.Tensor):
        batch = (batch, None)
    if not isinstance(batch, (tuple, list)) or not 1 <= len(batch) <= 2:
        raise DataError(f"{source} yields {type(batch).__name__} batches",
                        "yield (inputs, labels) pairs")
    x = batch[0]
    y = batch[1] if len(batch) == 2 else None
    x = _to_float(_as_tensor(x, Path(source), "inputs"), Path(source))
    _check_finite(x, Path(source))
    if y is not None and not isinstance(y, torch.Tensor):
        y = torch.as_tensor(y)
    return x, _labels_for(y, len(x), Path(source), labelled)


class _Collate:
    """collate_fn for hook Datasets: default collation, then `_as_pair` (picklable)."""

    def __init__(self, labelled: bool, normalise: "_Normalise", source: str):
        self.labelled, self.normalise, self.source = labelled, normalise, source

    def __call__(self, items: list) -> tuple[torch.Tensor, torch.Tensor]:
        from torch.utils.data import default_collate

        x, y = _as_pair(default_collate(items), self.labelled, self.source)
        return self.normalise(x), y


class _HookBatches(IterableDataset):
    """Re-yields a hook's DataLoader as (float32, int64) batches; used with batch_size=None."""

    def __init__(self, loader: DataLoader, labelled: bool, normalise: "_Normalise", source: str):
        self.loader, self.labelled, self.normalise, self.source = loader, labelled, normalise, \
            source

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in self.loader:
            x, y = _as_pair(batch, self.labelled, self.source)
            yield self.normalise(x), y

    def __len__(self) -> int:
        return len(self.loader)

    def check_first(self) -> None:
        try:
            next(iter(self))
        except StopIteration:
            raise DataError(f"data hook {self.source}() returned an empty DataLoader",
                            "return a loader with at least one batch") from None


def _check_item(dataset: Dataset, spec: str) -> None:
    try:
        n = len(dataset)
    except TypeError:
        raise DataError(f"data hook {spec}() returned a Dataset without a length",
                        "return a map-style Dataset or a DataLoader") from None
    if n == 0:
        raise DataError(f"data hook {spec}() returned an empty Dataset",
                        "return at least one sample")


# ---- shared -----------------------------------------------------------------------------------

class _Normalise:
    """(x - mean) / std per channel (dim 1); identity when neither is given (picklable)."""

    def __init__(self, mean, std):
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32).flatten()
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).flatten()
        if self.std is not None and bool((self.std == 0).any()):
            raise DataError("std contains 0", "give the per-channel standard deviations")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is None and self.std is None:
            return x
        view = (1, -1) + (1,) * (x.ndim - 2) if x.ndim >= 2 else (-1,)
        if self.mean is not None:
            x = x - self.mean.view(view)
        if self.std is not None:
            x = x / self.std.view(view)
        return x


def _loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    if batch_size < 1:
        raise DataError(f"batch size must be at least 1, got {batch_size}")
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)


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


# ---- checks against the model, input sizes, provenance ----------------------------------------

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
