"""Layer calls of an exported graph as real layers (part of `advisor.lift`).

`aten.conv2d`/`aten.convolution` (2-D, not transposed), `aten.linear`, `aten.batch_norm` (and the
inference IR's `_native_batch_norm_legit_no_training`) and `aten.layer_norm` called on parameters
become `nn.Conv2d`, `nn.Linear`, `nn.BatchNorm2d` and `nn.LayerNorm` holding copies of them; a
graph with control flow, non-aten ops or python functions is refused with the op's name.
"""
from __future__ import annotations

import operator

import torch
from torch import fx, nn

__all__ = ["load_tensors", "layer_for", "unliftable_op", "replace_uses", "same_layer", "free_name", "get_path"]

aten = torch.ops.aten


def unliftable_op(graph: fx.Graph) -> str:
    """A reason when the graph has control flow or ops outside aten (and python's operator)."""
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        t = node.target
        if isinstance(t, torch._ops.HigherOrderOperator):
            return (f"the graph has control flow ({t.__name__}): its structure depends on the "
                    "data, so it cannot be lifted into layers")
        if isinstance(t, torch._ops.OpOverload) and t.namespace not in ("aten", "prim"):
            return (f"the graph calls the custom op {t.namespace}::{t._opname}, which advisor "
                    "cannot turn into layers")
        if not isinstance(t, torch._ops.OpOverload) and getattr(t, "__module__", "") not in (
                "_operator", "operator", "torch", "math"):
            name = getattr(t, "__qualname__", repr(t))
            return f"the graph calls the python function {name}, which advisor cannot lift"
    return ""


def _attr(gm: nn.Module, node) -> tuple[str, torch.Tensor] | tuple[None, None]:
    """(target, tensor) when `node` is a get_attr of a parameter or buffer; else (None, None)."""
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        return None, None
    value = get_path(gm, node.target)
    return (node.target, value) if isinstance(value, torch.Tensor) else (None, None)


def _arg(node, i: int, name: str, default):
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def layer_for(node, gm):
    """(kind, new module, weight target) for a layer call on parameters, else (None, None, None)."""
    if node.op != "call_function":
        return None, None, None
    t = node.target
    if t in (aten.conv2d.default, aten.convolution.default):
        return _conv(node, gm, t is aten.convolution.default)
    if t is aten.linear.default:
        return _linear(node, gm)
    if t in (aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default):
        return _batch_norm(node, gm, t is aten.batch_norm.default)
    if t is aten.layer_norm.default:
        return _layer_norm(node, gm)
    return None, None, None


def _layer_norm(node, gm):
    """aten.layer_norm(x, normalized_shape, weight, bias, eps): its normalized shape is fixed in
    the call, so a pruned channel count would break it; as nn.LayerNorm it is pruned with them."""
    shape = _arg(node, 1, "normalized_shape", None)
    wt, w = _attr(gm, _arg(node, 2, "weight", None))
    ok, b = _bias(gm, node, 3, "bias")
    if wt is None or not ok or not isinstance(shape, (list, tuple)) or len(shape) != 1:
        return None, None, None
    ln = nn.LayerNorm(int(shape[0]), eps=float(_arg(node, 4, "eps", 1e-5)), bias=b is not None)
    load_tensors(ln, weight=w, bias=b)
    return "layer norms", ln, wt


def _bias(gm, node, i: int, name: str):
    b = _arg(node, i, name, None)
    if b is None:
        return True, None
    target, value = _attr(gm, b)
    return target is not None, value


def _conv(node, gm, general: bool):
    target, w = _attr(gm, _arg(node, 1, "weight", None))
    ok, b = _bias(gm, node, 2, "bias")
    if target is None or not ok or w.dim() != 4:
        return None, None, None
    stride, padding, dilation = (_arg(node, i, n, d) for i, n, d in
                                 ((3, "stride", [1, 1]), (4, "padding", [0, 0]),
                                  (5, "dilation", [1, 1])))
    if general:
        if _arg(node, 6, "transposed", False) or any(_arg(node, 7, "output_padding", [0, 0])):
            return None, None, None
        groups = _arg(node, 8, "groups", 1)
    else:
        groups = _arg(node, 6, "groups", 1)
    if isinstance(padding, str) or not all(isinstance(v, int) for v in
                                           (*stride, *padding, *dilation, groups)):
        return None, None, None
    conv = nn.Conv2d(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=tuple(stride),
                     padding=tuple(padding), dilation=tuple(dilation), groups=groups,
                     bias=b is not None)
    load_tensors(conv, weight=w, bias=b)
    return "convolutions", conv, target


def _linear(node, gm):
    target, w = _attr(gm, _arg(node, 1, "weight", None))
    ok, b = _bias(gm, node, 2, "bias")
    if target is None or not ok or w.dim() != 2:
        return None, None, None
    lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    load_tensors(lin, weight=w, bias=b)
    return "linear layers", lin, target


def _batch_norm(node, gm, general: bool):
    """aten.batch_norm(x, w, b, mean, var, training, momentum, eps, cudnn) or the inference
    IR's _native_batch_norm_legit_no_training(x, w, b, mean, var, momentum, eps)[0]."""
    if not general and any(u.target is not operator.getitem or u.args[1] != 0
                           for u in node.users):
        return None, None, None
    params = [_attr(gm, _arg(node, i, n, None)) for i, n in
              ((1, "weight"), (2, "bias"), (3, "running_mean"), (4, "running_var"))]
    (wt, w), (bt, b), (mt, mean), (vt, var) = params
    if mt is None or vt is None or (wt is None) != (bt is None) or mean.dim() != 1:
        return None, None, None
    momentum, eps = (_arg(node, 6, "momentum", 0.1), _arg(node, 7, "eps", 1e-5)) if general \
        else (_arg(node, 5, "momentum", 0.1), _arg(node, 6, "eps", 1e-5))
    bn = nn.BatchNorm2d(mean.shape[0], eps=float(eps), momentum=float(momentum),
                        affine=wt is not None)
    load_tensors(bn, weight=w, bias=b, running_mean=mean, running_var=var)
    tracked = get_path(gm, mt.rsplit(".", 1)[0] + ".num_batches_tracked") if "." in mt else None
    if isinstance(tracked, torch.Tensor):
        bn.num_batches_tracked.copy_(tracked)
    return "batch norms", bn, wt or mt


def load_tensors(module: nn.Module, **tensors) -> None:
    """Copy tensors into `module`'s parameters and buffers of those names (None: skipped)."""
    with torch.no_grad():
        for name, value in tensors.items():
            if value is not None:
                getattr(module, name).copy_(value.detach())


def same_layer(a: nn.Module, b: nn.Module) -> bool:
    """Two call sites of one layer (a module called twice) share it."""
    sa, sb = a.state_dict(), b.state_dict()
    return type(a) is type(b) and repr(a) == repr(b) and sa.keys() == sb.keys() and \
        all(torch.equal(sa[k], sb[k]) for k in sa)


def free_name(base: str, taken) -> str:
    i, name = 1, base
    while name in taken:
        i, name = i + 1, f"{base}{i}"
    return name


def replace_uses(old, new) -> None:
    """Uses of `old` now use `new`; for a tuple-returning batch norm, its getitem(…, 0) users."""
    if old.target is aten._native_batch_norm_legit_no_training.default:
        for user in list(old.users):
            user.replace_all_uses_with(new)
            user.graph.erase_node(user)
    else:
        old.replace_all_uses_with(new)


def get_path(module, target: str):
    obj = module
    for part in target.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj
