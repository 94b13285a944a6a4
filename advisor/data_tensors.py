"""Tensor data files and the checks every batch goes through.

`.pt` files are read with `torch.load(weights_only=True)` (tensors only, never pickled code),
`.npz` with `allow_pickle=False`; inputs/labels are found under the accepted keys, converted to
float32 / int64 (uint8 inputs scaled to [0, 1]) and refused when not finite, of the wrong shape,
or labelled inconsistently — each with a one-line DataError naming the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from advisor.errors import DataError
from advisor.image_folder import UNLABELLED

INPUT_KEYS = ("inputs", "x", "images", "image", "pixel_values", "data")
LABEL_KEYS = ("labels", "y", "targets", "target", "label")


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


def _loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    if batch_size < 1:
        raise DataError(f"batch size must be at least 1, got {batch_size}")
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)
