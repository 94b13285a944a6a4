"""scikit-learn's digits as a small real image-classification set (the data ships in the wheel).

8x8 grey images are upsampled to 32x32 (bilinear), replicated to 3 channels and standardised, so
the example models look like ordinary RGB vision models. The train/val/test split is stratified
and seeded: the same on every machine.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from advisor.errors import DataError

SPLIT_SEED = 0
RESOLUTION = 32
MEAN, STD = 0.30, 0.40  # of the 0..1-scaled digits pixels, rounded; applied to every channel


@dataclass
class Split:
    inputs: torch.Tensor  # float32 (N, 3, 32, 32)
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return len(self.labels)


def _preprocess(images: np.ndarray, resolution: int) -> torch.Tensor:
    x = torch.from_numpy(images.astype(np.float32) / 16.0).unsqueeze(1)  # (N,1,8,8)
    x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    x = (x - MEAN) / STD
    return x.expand(-1, 3, -1, -1).contiguous()


def load_digits_splits(resolution: int = RESOLUTION, fractions: tuple[float, float] = (0.2, 0.2),
                       seed: int = SPLIT_SEED) -> dict[str, Split]:
    """Return {"train", "val", "test"} splits (60/20/20 by default), stratified by class."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - depends on the install
        raise DataError("the built-in example needs scikit-learn",
                        "install it: pip install -e '.[example]'") from e
    data = load_digits()
    images, labels = data.images, data.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val, n_test = int(round(len(idx) * fractions[0])), int(round(len(idx) * fractions[1]))
        parts["val"] += idx[:n_val].tolist()
        parts["test"] += idx[n_val:n_val + n_test].tolist()
        parts["train"] += idx[n_val + n_test:].tolist()
    x = _preprocess(images, resolution)
    y = torch.from_numpy(labels)
    out = {}
    for name, idx in parts.items():
        idx_t = torch.tensor(sorted(idx))
        out[name] = Split(x[idx_t], y[idx_t])
    return out


def loader(split: Split, batch_size: int = 64, shuffle: bool = False, seed: int = 0):
    """A DataLoader over a split (seeded shuffling)."""
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(split.inputs, split.labels), batch_size=batch_size,
                      shuffle=shuffle, generator=g if shuffle else None)
