"""Fixed-size reshapes that follow the model (part of `advisor.lift`, used by `advisor.onnx_lift`).

An export at batch 1 writes `view(x, [1, 512])`, a channel shuffle `view(x, [1, 2, 58, 28, 28])`:
sizes that break as soon as the model trains at batch 32 or loses channels to pruning. Each such
reshape becomes `reshape_following(x, template)`, whose template takes the batch from `x` and
lets the dimension that carries the channels be inferred.
"""
from __future__ import annotations

import torch
from torch import fx

__all__ = ["reshape_following", "following_shape", "follow_shapes"]

aten = torch.ops.aten


def reshape_following(x: torch.Tensor, shape: list) -> torch.Tensor:
    """`x.reshape(shape)` where "batch" stands for x's own first dimension."""
    return x.reshape([x.shape[0] if d == "batch" else d for d in shape])


_RESHAPES = (aten.view.default, aten.reshape.default, aten._unsafe_view.default)


def follow_shapes(graph: fx.Graph) -> int:
    """Fixed-size views become `reshape_following`: batch from the input, channels inferred."""
    count = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in _RESHAPES:
            continue
        src = node.args[0]
        val = src.meta.get("val") if isinstance(src, fx.Node) else None
        shape = list(node.args[1])
        if val is None or not all(isinstance(d, int) for d in (*val.shape, *shape)):
            continue
        spec = following_shape(list(val.shape), shape)
        if spec == shape:
            continue
        with graph.inserting_before(node):
            new = graph.call_function(reshape_following, (src, spec))
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        count += 1
    return count


def following_shape(source: list[int], shape: list[int]) -> list:
    """The template for reshaping a tensor of `source` shape to `shape` so that it still works
    at another batch size and channel count: the batch dimension (kept in place) becomes
    "batch", and the dimension that carries the channels becomes -1 (a -1 already there is
    resolved first: exporters write [-1, C] for a flatten, with the batch inferred).

    That dimension is looked for among those not kept from the source (not the batch, not a
    common trailing suffix such as H, W): the channel count itself, else a multiple of it
    (C·H·W flattened), else the largest divisor of it (channels per group in a shuffle).
    """
    spec = _following(source, _resolved(source, shape))  # an exporter's -1 is placed anew
    if -1 in shape and -1 not in spec:
        # no better place was found: the exporter's own -1 stays (it may fold the batch into
        # another dimension, as a window partition does: [-1, 49, 96])
        return ["batch" if i == 0 and spec[0] == "batch" and d != -1 else d
                for i, d in enumerate(shape)]
    return spec


def _following(source: list[int], shape: list[int]) -> list:
    """`following_shape` for a shape without -1."""
    spec: list = list(shape)
    if len(source) >= 2 and len(shape) >= 1 and shape[0] == source[0]:
        spec[0] = "batch"
    if len(source) < 2:  # a per-channel vector shaped to broadcast ([C] → [1, C, 1, 1])
        hits = [i for i, d in enumerate(shape) if source and d == source[0] and d > 1]
        if hits:
            spec[hits[0]] = -1
        return spec
    suffix = 0
    # the kept suffix leaves at least one dimension after the batch free for the channels
    while suffix < min(len(source), len(shape)) - 2 and \
            source[-1 - suffix] == shape[-1 - suffix]:
        suffix += 1
    free = list(range(1, len(shape) - suffix))
    channels = source[1]
    for test in (lambda d: d == channels, lambda d: d % channels == 0,
                 lambda d: channels % d == 0 and d > 1):
        hits = [i for i in free if shape[i] > 0 and test(shape[i])]
        if hits:
            best = max(hits, key=lambda i: (shape[i], i))
            spec[best] = -1
            return spec
    return spec


def _resolved(source: list[int], shape: list[int]) -> list[int]:
    """`shape` with its -1 (if any) replaced by the size it stands for."""
    if -1 not in shape:
        return list(shape)
    known = 1
    for d in shape:
        known *= d if d != -1 else 1
    total = 1
    for d in source:
        total *= d
    return [total // known if d == -1 and known else d for d in shape]
