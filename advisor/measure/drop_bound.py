"""How sure a measured accuracy drop is: a one-sided upper bound from the paired samples.

A drop measured on n validation samples is uncertain: on 359 digits images one image is 0.28
points. Candidate and baseline are evaluated on the same samples, so only the samples where
they disagree carry information (McNemar): with `worse` samples the baseline got right and the
candidate wrong, and `better` the other way, the drop is (worse − better) / n and its variance
is estimated by (worse + better − (worse − better)² / n) / n². The upper bound is the drop plus
z = 1.645 standard errors (one-sided 95%, normal approximation). With no disagreement at all
the drop is exactly what was measured and the bound equals it.

The selection prefers plans whose bound is within the allowed drop (`advisor.search.select`);
where none is, it falls back to the point estimate and says that the split is too small to be
sure. Flags travel between processes packed (`pack`, `unpack`: 1 bit per sample).
"""
from __future__ import annotations

import math

import numpy as np

Z_ONE_SIDED_95 = 1.645
METHOD = ("upper bound = drop + 1.645 standard errors of the paired difference (McNemar, "
          "normal approximation, one-sided 95%), from the samples where candidate and baseline "
          "disagree")


def paired_drop(baseline: np.ndarray, candidate: np.ndarray, z: float = Z_ONE_SIDED_95) -> dict:
    """The drop in points with its upper bound, from per-sample correctness flags."""
    b, c = np.asarray(baseline, dtype=bool), np.asarray(candidate, dtype=bool)
    if b.shape != c.shape or not b.size:
        raise ValueError(f"paired flags need equal, non-empty shapes (got {b.shape}, {c.shape})")
    n = b.size
    worse, better = int((b & ~c).sum()), int((~b & c).sum())
    d = (worse - better) / n
    var = max(0.0, (worse + better - (worse - better) ** 2 / n)) / n ** 2
    return {"drop": 100 * d, "upper": 100 * (d + z * math.sqrt(var)), "n": n,
            "worse": worse, "better": better}


def pack(flags: np.ndarray) -> dict:
    arr = np.asarray(flags, dtype=bool)
    return {"n": int(arr.size), "bits": np.packbits(arr).tobytes().hex()}


def unpack(packed: dict) -> np.ndarray:
    bits = np.frombuffer(bytes.fromhex(packed["bits"]), dtype=np.uint8)
    return np.unpackbits(bits)[: int(packed["n"])].astype(bool)
