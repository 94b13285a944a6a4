"""Unstructured sparsity as it really deploys: masks, compressed storage, CSR Linear execution.

What a zero buys, measured on this kind of CPU: dense kernels skip no zeros (an 80% sparse CNN
runs exactly as fast as the dense one), so sparsity makes a model *smaller when stored
compressed*, not faster. The exception is a Linear layer at high sparsity run as a CSR sparse
matmul in eager PyTorch (a 90% sparse 4096x4096 Linear ran 3.6x faster here) — but CSR
layers have no ONNX or `.pt2` form (torch.export cannot save sparse CSR tensors), so they deploy
only to the eager torch runtime; `densify` turns them back into dense Linear layers for export.

- `magnitude_masks` / `apply_masks` — global or local magnitude masks on Conv/Linear weights.
- `MaskKeeper` — re-zeroes pruned weights after every optimizer step (`train(after_step=...)`).
- `trainable_sparse(model)` — context for any training on a sparse model: CSR layers turn dense
  for training, zero weights stay zero, CSR layers come back afterwards. Every pass that trains
  (fine-tuning, distillation) should train inside it, or the sparsity is lost.
- `storage_report` — per-layer sparsity, dense bytes, CSR and bitmap bytes, and the zlib size
  actually measured on the weights.
- `CSRLinear`, `to_csr`, `densify`, `time_ms` — CSR execution and its micro-benchmark.
- `leaves_sparse_weights(steps)` — whether a plan's steps made weights sparse, so its model is
  shipped gzip-compressed (`advisor.fileio.gzip_copy`) and its size is that file's size.
"""
from __future__ import annotations

import contextlib
import math
import warnings
import zlib
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

SPARSE_TAG = "_advisor_sparse"  # attribute set on modules whose zeros are a pruning mask
PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
MIN_ZERO_FRACTION = 0.01  # an untagged layer with at least this share of exact zeros is sparse


# ---- masks --------------------------------------------------------------------------------

def prunable_layers(model: nn.Module, exclude: Iterable[str] = ()) -> dict[str, nn.Module]:
    """Conv/Linear layers by name (CSRLinear counts as Linear), minus `exclude`."""
    skip = set(exclude)
    return {n: m for n, m in model.named_modules()
            if isinstance(m, PRUNABLE + (CSRLinear,)) and n not in skip}


def magnitude_masks(layers: dict[str, nn.Module], sparsity: float, scope: str,
                    scores: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Keep-masks (bool, weight-shaped) removing a `sparsity` share of the weights.

    `scores` default to |w|. Global: one ranking over all layers (exactly round(sparsity · total)
    weights removed); local: every layer loses the same share.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    scores = scores or {n: _dense_weight(m).detach().abs() for n, m in layers.items()}
    masks: dict[str, torch.Tensor] = {}
    if scope == "global":
        flat = torch.cat([scores[n].flatten().float() for n in layers])
        k = int(round(sparsity * flat.numel()))
        keep = _keep_all_but_smallest(flat, k)
        offset = 0
        for n in layers:
            size = scores[n].numel()
            masks[n] = keep[offset:offset + size].view_as(scores[n])
            offset += size
    elif scope == "local":
        for n in layers:
            s = scores[n].flatten().float()
            k = int(round(sparsity * s.numel()))
            masks[n] = _keep_all_but_smallest(s, k).view_as(scores[n])
    else:
        raise ValueError(f"scope must be 'global' or 'local', got {scope!r}")
    return masks


def _keep_all_but_smallest(flat: torch.Tensor, k: int) -> torch.Tensor:
    """A keep-mask removing exactly the `k` smallest scores (ties at the threshold: the first
    ones by position). `kthvalue` plus a tie fix is ~10x faster than `topk` on the 11 M weights
    of a ResNet-18 (0.3 s against 2.9 s measured here), and exact."""
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    if k <= 0:
        return keep
    if k >= flat.numel():
        return ~keep
    threshold = torch.kthvalue(flat, k).values
    below = flat < threshold
    keep[below] = False
    ties = torch.nonzero(flat == threshold).flatten()
    keep[ties[:k - int(below.sum())]] = False
    return keep


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the masked weights (permanently: no reparametrisation is left behind) and tag them."""
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        m = modules[name]
        m.weight.mul_(mask.to(m.weight.dtype))
        setattr(m, SPARSE_TAG, True)


def current_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Keep-masks of the layers whose zeros are pruned weights (tagged, or ≥1% exact zeros)."""
    out = {}
    for name, m in prunable_layers(model).items():
        if isinstance(m, CSRLinear):
            continue
        w = m.weight.detach()
        zeros = (w == 0)
        if getattr(m, SPARSE_TAG, False) or zeros.float().mean().item() >= MIN_ZERO_FRACTION:
            out[name] = ~zeros
    return out


class MaskKeeper:
    """`after_step` hook: re-zero pruned weights after every optimizer step."""

    def __init__(self, model: nn.Module, masks: dict[str, torch.Tensor]):
        modules = dict(model.named_modules())
        self.names = list(masks)
        self.pairs = [(modules[n], masks[n]) for n in masks]

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> None:
        for m, mask in self.pairs:
            if m.weight.shape == mask.shape:
                m.weight.mul_(mask.to(m.weight.dtype))

    def __bool__(self) -> bool:
        return bool(self.pairs)


@contextlib.contextmanager
def trainable_sparse(model: nn.Module, keep: bool = True) -> Iterator[MaskKeeper | None]:
    """Train a (possibly) sparse model: CSR layers densified, zeros kept, CSR restored after.

    Yields the `after_step` hook (None when `keep` is False or nothing is sparse).
    """
    csr_names = densify(model)
    keeper = MaskKeeper(model, current_masks(model)) if keep else None
    try:
        yield keeper if keeper else None
    finally:
        if csr_names:
            to_csr(model, csr_names)


def leaves_sparse_weights(steps: Iterable[dict]) -> bool:
    """True when a step of a run plan reported compressed storage (a sparsity pass)."""
    for step in steps:
        info = step.get("info") or {}
        if isinstance(info.get("compressed_bytes"), (int, float)) and info["compressed_bytes"] > 0:
            return True
    return False


def layer_sparsity(model: nn.Module) -> dict[str, float]:
    return {n: round(1.0 - _nnz(m) / _dense_weight(m).numel(), 6)
            for n, m in prunable_layers(model).items()}


def overall_sparsity(model: nn.Module, names: Iterable[str] | None = None) -> float:
    layers = prunable_layers(model)
    names = list(layers) if names is None else list(names)
    total = sum(_dense_weight(layers[n]).numel() for n in names)
    nnz = sum(_nnz(layers[n]) for n in names)
    return 1.0 - nnz / max(1, total)


# ---- storage ------------------------------------------------------------------------------

def storage_report(model: nn.Module) -> dict:
    """What the zeros save on disk: dense, CSR, bitmap and measured zlib bytes.

    CSR: fp32 values + int32 column indices + int32 row pointers of the weight viewed as
    (out, in·k·k). Bitmap: fp32 values + one bit per weight. `compressed_bytes` keeps each
    sparse weight in its smaller format and everything else (biases, BatchNorm, buffers) dense.
    `zlib_bytes` is measured: zlib level 1 over the raw fp32 bytes of every tensor (an estimate
    at the fastest level: level 6 is twice as slow on a 45 MB model for 5% smaller output; the
    size reported for a candidate is that of the gzip file it ships as).
    """
    layers = prunable_layers(model)
    per_layer = {}
    compressed = 0
    for name, m in layers.items():
        w = _dense_weight(m).detach()
        numel, nnz = w.numel(), _nnz(m)
        rows = w.shape[0]
        dense_b = numel * 4
        csr_b = nnz * 8 + (rows + 1) * 4
        bitmap_b = nnz * 4 + math.ceil(numel / 8)
        best = min(dense_b, csr_b, bitmap_b)
        fmt = "dense" if best == dense_b else ("csr" if best == csr_b else "bitmap")
        per_layer[name] = {"shape": list(w.shape), "sparsity": round(1 - nnz / numel, 6),
                           "dense_bytes": dense_b, "csr_bytes": csr_b, "bitmap_bytes": bitmap_b,
                           "format": fmt}
        compressed += best
    rest = 0
    for t in _other_tensors(model, layers):
        rest += t.numel() * t.element_size()
    dense_total = sum(v["dense_bytes"] for v in per_layer.values()) + rest
    blob = b"".join(_tensor_bytes(t) for t in _all_tensors(model))
    return {"layers": per_layer, "dense_bytes": dense_total,
            "compressed_bytes": compressed + rest, "zlib_bytes": len(zlib.compress(blob, 1)),
            "compression_ratio": round(dense_total / max(1, compressed + rest), 3)}


# ---- CSR execution ------------------------------------------------------------------------

class CSRLinear(nn.Module):
    """A Linear layer whose weight is a sparse CSR tensor (torch eager only).

    Batch-1 inputs use a CSR matrix-vector product, larger batches CSR x dense matmul. There is
    no ONNX or torch.export form; `densify` converts back for export.
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        w = linear.weight.detach().float()
        with warnings.catch_warnings():  # "sparse CSR support is in beta": known, measured here
            warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support.*")
            csr = w.to_sparse_csr()
        self.register_buffer("weight", csr)
        # always a tensor (zeros without bias): TorchScript needs one attribute type
        self.has_bias = linear.bias is not None
        self.register_buffer("bias", linear.bias.detach().clone() if self.has_bias
                             else torch.zeros(self.out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # written so that torch.jit.script takes it: a traced CSR model keeps both branches
        x2 = x.reshape(-1, self.in_features)
        if x2.shape[0] == 1:
            y = torch.mv(self.weight, x2[0]).unsqueeze(0)
        else:
            y = torch.mm(self.weight, x2.t()).t()
        if self.has_bias:
            y = y + self.bias
        out_shape = list(x.shape[:-1])
        out_shape.append(self.out_features)
        return y.reshape(out_shape)

    def __deepcopy__(self, memo) -> "CSRLinear":
        # sparse CSR tensors have no storage for copy.deepcopy to copy; rebuild from dense
        new = CSRLinear(self.to_linear())
        new.train(self.training)
        memo[id(self)] = new
        return new

    def to_linear(self) -> nn.Linear:
        lin = nn.Linear(self.in_features, self.out_features, bias=self.has_bias)
        with torch.no_grad():
            lin.weight.copy_(self.weight.to_dense())
            if self.has_bias:
                lin.bias.copy_(self.bias)
        setattr(lin, SPARSE_TAG, True)
        return lin

    def extra_repr(self) -> str:
        nnz = self.weight.values().numel()
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"density={nnz / (self.in_features * self.out_features):.3f}")


def to_csr(model: nn.Module, names: Iterable[str]) -> list[str]:
    """Replace the named Linear layers by CSRLinear in place; returns the names converted."""
    done = []
    for name in names:
        m = _get(model, name)
        if isinstance(m, nn.Linear):
            set_module(model, name, CSRLinear(m))
            done.append(name)
    return done


def densify(model: nn.Module) -> list[str]:
    """Replace every CSRLinear by an equal dense Linear in place; returns their names."""
    names = [n for n, m in model.named_modules() if isinstance(m, CSRLinear)]
    for n in names:
        set_module(model, n, _get(model, n).to_linear())
    return names


def has_csr(model: nn.Module) -> bool:
    return any(isinstance(m, CSRLinear) for m in model.modules())


def script_csr_layers(model: nn.Module) -> nn.Module:
    """A copy whose CSR layers are scripted, so that tracing the model keeps their batch branch
    (TorchScript is the one saved format that holds sparse CSR tensors)."""
    import copy

    model = copy.deepcopy(model)
    for name in [n for n, m in model.named_modules() if isinstance(m, CSRLinear)]:
        set_module(model, name, torch.jit.script(_get(model, name)))
    return model


def time_ms(fn: Callable[[], object], repeats: int = 30, warmup: int = 5) -> float:
    """Median wall time of `fn()` in ms under inference mode (micro-benchmark, this process):
    the p50 of `advisor.measure.timer.time_inprocess`."""
    from advisor.measure.timer import time_inprocess

    return float(time_inprocess(fn, repeats=repeats, warmup=warmup).p50)


# ---- helpers ------------------------------------------------------------------------------

def _dense_weight(m: nn.Module) -> torch.Tensor:
    return m.weight.to_dense() if isinstance(m, CSRLinear) else m.weight


def _nnz(m: nn.Module) -> int:
    if isinstance(m, CSRLinear):
        return int((m.weight.values() != 0).sum())
    return int((m.weight != 0).sum())


def _other_tensors(model: nn.Module, layers: dict[str, nn.Module]) -> list[torch.Tensor]:
    weights = {id(m.weight) for m in layers.values()}
    return [t for t in list(model.parameters()) + list(model.buffers()) if id(t) not in weights]


def _all_tensors(model: nn.Module) -> list[torch.Tensor]:
    out = []
    for m in model.modules():
        for t in list(m.parameters(recurse=False)) + list(m.buffers(recurse=False)):
            out.append(t.to_dense() if t.layout == torch.sparse_csr else t)
    return out


def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().numpy().tobytes()


def _get(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name)


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put `new` in place of the submodule called `name`."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
