"""Data from code: a `pkg.module:function` hook returning a DataLoader, a Dataset or tensors.

For preprocessing or formats advisor does not read itself. The hook is imported only because the
user named it; its batches may be `(x, y)` pairs, dicts with the accepted keys, or bare inputs,
and each is converted and checked like a tensor file's (`advisor.data_tensors`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from advisor.data_tensors import (_as_tensor, _check_finite, _check_tensors, _labels_for, _loader,
                                  _split_object, _to_float)
from advisor.errors import DataError
from advisor.preprocess import Preprocess


def _from_hook(spec: str, batch_size: int, labelled: bool, shuffle: bool, seed: int,
               norm: Preprocess) -> DataLoader:
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

    def __init__(self, labelled: bool, normalise: Preprocess, source: str):
        self.labelled, self.normalise, self.source = labelled, normalise, source

    def __call__(self, items: list) -> tuple[torch.Tensor, torch.Tensor]:
        from torch.utils.data import default_collate

        x, y = _as_pair(default_collate(items), self.labelled, self.source)
        return self.normalise(x), y


class _HookBatches(IterableDataset):
    """Re-yields a hook's DataLoader as (float32, int64) batches; used with batch_size=None."""

    def __init__(self, loader: DataLoader, labelled: bool, normalise: Preprocess, source: str):
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
