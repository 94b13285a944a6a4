"""Lift a `torch.export` program into a trainable module with real layers.

A deployment engineer is often handed only `model.pt2`. Its graph calls `aten.conv2d`,
`aten.linear`, `aten.batch_norm` and `aten.layer_norm` on lifted parameters, so nothing that
needs layers (Torch-Pruning's dependency graph, Tucker-2, fine-tuning with BatchNorm in train
mode) can work on `ep.module()`. Here each such call on parameters becomes a real `nn.Conv2d`,
`nn.Linear`, `nn.BatchNorm2d` or `nn.LayerNorm` submodule at the module path the export
recorded, and the rest of the graph stays as it is.

Shapes the export hard-coded are made to follow the model: a `view`/`reshape` to literal sizes
takes its batch dimension from its input and lets the dimension that carries the channels be
inferred (-1), so the module trains at any batch size and still runs after channels are pruned.
`_guards_fn` (the export's input-shape guards, batch 1) is dropped for the same reason.

Written here because no library does it: torch.export can unlift a program (`ep.module()`) but
keeps its parameters as bare attributes; Torch-Pruning, NNI and NNCF all need the `nn.Module`.
Lifting refuses, with the op that stops it, a graph with control flow (higher-order ops) or ops
outside the aten namespace; the lifted module must reproduce the program's outputs (1e-5) at two
batch sizes, or it is not used.
"""
from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field

import torch
from torch import fx, nn

__all__ = ["LiftResult", "lift_program", "reshape_following", "LIFT_VERSION"]

LIFT_VERSION = 1  # recorded in plans: apply replays the same lifting
TOLERANCE = 1e-5

aten = torch.ops.aten


@dataclass
class LiftResult:
    module: nn.Module | None
    reason: str = ""  # why it was not lifted (module None)
    layers: dict = field(default_factory=dict)  # kind -> count
    reshapes: int = 0  # views made to follow batch and channels
    source: str = "the exported graph"

    def summary(self) -> str:
        parts = [f"{n} {k}" for k, n in self.layers.items() if n]
        text = f"lifted from {self.source}: " + ", ".join(parts) + " became layers"
        if self.reshapes:
            text += f"; {self.reshapes} fixed-size reshape(s) now follow batch and channels"
        return text


def reshape_following(x: torch.Tensor, shape: list) -> torch.Tensor:
    """`x.reshape(shape)` where "batch" stands for x's own first dimension."""
    return x.reshape([x.shape[0] if d == "batch" else d for d in shape])


def lift_program(ep, example: torch.Tensor) -> LiftResult:
    """The program `ep` as a module with real layers, or the reason it cannot be lifted.

    The module hierarchy the export recorded is rebuilt first (`torch.export.unflatten`): each
    original module becomes a graph module of its own, and one that only calls a layer on its
    parameters becomes that layer — so blocks can be pruned one at a time (`passes.blockwise`)
    and distillation finds its stages by name. Where unflattening fails, the flat graph is
    lifted instead (layers named by their paths, no blocks).
    """
    with _quiet():
        gm = ep.module()
    stop = _unliftable_op(gm.graph)
    if stop:
        return LiftResult(None, stop)
    out_spec = getattr(getattr(gm.graph._codegen, "pytree_info", None), "out_spec", None)
    tried = []
    for source in ("unflatten", "flat"):
        stats = LiftResult(None, layers={"convolutions": 0, "linear layers": 0,
                                         "batch norms": 0, "layer norms": 0})
        try:
            if source == "unflatten":
                with _quiet():
                    tree = torch.export.unflatten(ep)
            else:
                tree = gm
            lifted = _lift_module(tree, stats, out_spec=out_spec)
        except Exception as e:  # noqa: BLE001 - a graph this code has not met: try the next way
            tried.append(f"{source}: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
                         if str(e) else f"{source}: {type(e).__name__}")
            continue
        if not any(stats.layers.values()):
            return LiftResult(None, "the graph calls no convolution, linear or batch-norm on its "
                                    "parameters: there are no layers to lift")
        lifted.eval()
        mismatch = _check_same(lifted, gm, example)
        if not mismatch:
            stats.module = lifted
            return stats
        tried.append(f"{source}: {mismatch}")
    reasons = {t.split(": ", 1)[1] for t in tried}
    return LiftResult(None, reasons.pop() if len(reasons) == 1 else "; ".join(tried))


def _lift_module(mod: nn.Module, stats: LiftResult, out_spec=None) -> nn.Module:
    """`mod` (an unflattened module or the flat graph module) with its layer calls as layers,
    its submodules lifted the same way, and fixed-size reshapes following batch and channels."""
    graph = fx.Graph()
    graph.output(graph.graph_copy(mod.graph, {}))
    leaf = _as_layer(graph, mod)
    if leaf is not None:
        kind, layer = leaf
        stats.layers[kind] += 1
        return layer
    children: dict[str, nn.Module] = {}
    made: dict[str, nn.Module] = {}
    for node in list(graph.nodes):
        if node.op == "call_module" and node.target != "_guards_fn":
            if node.target not in children:
                child = _get_path(mod, node.target)
                children[node.target] = _lift_module(child, stats) \
                    if isinstance(getattr(child, "graph", None), fx.Graph) else child
            continue
        kind, module, weight_target = _layer_for(node, mod)
        if module is None:
            continue
        path = weight_target.rsplit(".", 1)[0] if "." in weight_target else weight_target + "_layer"
        if path in made and not _same_layer(made[path], module) or path in children:
            path = _free_name(path + "_lifted", {**made, **children})
        made.setdefault(path, module)
        with graph.inserting_before(node):
            new = graph.call_module(path, (node.args[0],))
        new.meta = dict(node.meta)
        _replace_uses(node, new)
        graph.erase_node(node)
        stats.layers[kind] += 1
    stats.reshapes += _follow_shapes(graph)
    for node in list(graph.nodes):
        if node.op == "call_module" and node.target == "_guards_fn":
            graph.erase_node(node)
        elif node.op == "get_attr" and not node.users:
            graph.erase_node(node)
    root = nn.Module()
    for path in sorted({**made, **children}, key=lambda p: p.count(".")):
        _set_path(root, path, made.get(path) or children[path])
    for node in graph.nodes:
        if node.op == "get_attr":
            _copy_attr(mod, root, node.target)
    if out_spec is not None:
        _single_output(graph, out_spec)
    graph.lint()
    return fx.GraphModule(root, graph, class_name="LiftedProgram" if out_spec is not None
                          else "LiftedBlock")


def _as_layer(graph: fx.Graph, mod: nn.Module):
    """(kind, layer) when the graph only calls one layer on its own parameters (a leaf module
    such as `layer1.0.conv1`): that layer replaces the whole module."""
    work = [n for n in graph.nodes if n.op not in ("placeholder", "get_attr", "output")]
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1 or not work:
        return None
    kind, layer, _ = _layer_for(work[0], mod)
    if layer is None or work[0].args[0] is not inputs[0]:
        return None
    rest = work[1:]
    out = next(n for n in graph.nodes if n.op == "output").args[0]
    if isinstance(out, (tuple, list)) and len(out) == 1:
        out = out[0]
    if rest and not (len(rest) == 1 and rest[0].target is operator.getitem and
                     rest[0].args == (work[0], 0)):
        return None
    return (kind, layer) if out is (rest[0] if rest else work[0]) else None


# ---- what can be lifted -----------------------------------------------------------------------

def _unliftable_op(graph: fx.Graph) -> str:
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
    value = _get_path(gm, node.target)
    return (node.target, value) if isinstance(value, torch.Tensor) else (None, None)


def _arg(node, i: int, name: str, default):
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def _layer_for(node, gm):
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
    _load(ln, weight=w, bias=b)
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
    _load(conv, weight=w, bias=b)
    return "convolutions", conv, target


def _linear(node, gm):
    target, w = _attr(gm, _arg(node, 1, "weight", None))
    ok, b = _bias(gm, node, 2, "bias")
    if target is None or not ok or w.dim() != 2:
        return None, None, None
    lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    _load(lin, weight=w, bias=b)
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
    _load(bn, weight=w, bias=b, running_mean=mean, running_var=var)
    tracked = _get_path(gm, mt.rsplit(".", 1)[0] + ".num_batches_tracked") if "." in mt else None
    if isinstance(tracked, torch.Tensor):
        bn.num_batches_tracked.copy_(tracked)
    return "batch norms", bn, wt or mt


def _load(module: nn.Module, **tensors) -> None:
    with torch.no_grad():
        for name, value in tensors.items():
            if value is not None:
                getattr(module, name).copy_(value.detach())


def _same_layer(a: nn.Module, b: nn.Module) -> bool:
    """Two call sites of one layer (a module called twice) share it."""
    sa, sb = a.state_dict(), b.state_dict()
    return type(a) is type(b) and repr(a) == repr(b) and sa.keys() == sb.keys() and \
        all(torch.equal(sa[k], sb[k]) for k in sa)


def _free_name(base: str, taken) -> str:
    i, name = 1, base
    while name in taken:
        i, name = i + 1, f"{base}{i}"
    return name


def _replace_uses(old, new) -> None:
    """Uses of `old` now use `new`; for a tuple-returning batch norm, its getitem(…, 0) users."""
    if old.target is aten._native_batch_norm_legit_no_training.default:
        for user in list(old.users):
            user.replace_all_uses_with(new)
            user.graph.erase_node(user)
    else:
        old.replace_all_uses_with(new)


# ---- shapes that follow the model ------------------------------------------------------------

_RESHAPES = (aten.view.default, aten.reshape.default, aten._unsafe_view.default)


def _follow_shapes(graph: fx.Graph) -> int:
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
    shape = _resolved(source, shape)  # a -1 the exporter wrote is placed anew below
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


# ---- building the module ---------------------------------------------------------------------

def _get_path(module, target: str):
    obj = module
    for part in target.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _holder(root: nn.Module, target: str) -> tuple[nn.Module, str]:
    """The module that holds `target`'s last name (containers made on the way), and that name."""
    *parents, name = target.split(".")
    holder = root
    for part in parents:
        nxt = getattr(holder, part, None)
        if nxt is None:
            nxt = nn.Module()
            holder.add_module(part, nxt)
        holder = nxt
    return holder, name


def _set_path(root: nn.Module, path: str, value: nn.Module) -> None:
    holder, name = _holder(root, path)
    old = holder._modules.get(name)
    if old is not None:  # a container made for a deeper path: keep its children
        for child_name, child in old.named_children():
            value.add_module(child_name, child)
    holder.add_module(name, value)


def _copy_attr(gm: nn.Module, root: nn.Module, target: str) -> None:
    """A parameter, buffer or constant the remaining graph reads, at its own path (a lifted
    layer's own tensor is already there, so tied uses stay tied)."""
    if _get_path(root, target) is not None:
        return
    holder, name = _holder(root, target)
    value = _get_path(gm, target)
    if isinstance(value, nn.Parameter):
        holder.register_parameter(name, nn.Parameter(value.detach().clone(),
                                                     requires_grad=value.requires_grad))
    elif isinstance(value, torch.Tensor):
        holder.register_buffer(name, value.detach().clone())
    else:
        setattr(holder, name, copy.deepcopy(value))


def _single_output(graph: fx.Graph, out_spec) -> None:
    """The exported graph returns a flat tuple that its pytree code turns back into the model's
    output; a lifted module with the default code returns what the model returned: one tensor
    stays one tensor."""
    out = next(n for n in graph.nodes if n.op == "output")
    values = out.args[0]
    if out_spec.is_leaf() and isinstance(values, (tuple, list)) and len(values) == 1:
        out.args = (values[0],)


def _check_same(lifted: nn.Module, gm: nn.Module, example: torch.Tensor) -> str:
    """'' when the lifted module computes the program's outputs (1e-5) at the example's batch
    and at twice it; else the reason."""
    try:
        with torch.no_grad(), _quiet():
            ref = gm(example)
            out = lifted(example)
            two = lifted(torch.cat([example, example.flip(0)]))
    except Exception as e:
        return f"the lifted module does not run: {type(e).__name__}: {str(e).splitlines()[0]}"
    if not (isinstance(ref, torch.Tensor) and isinstance(out, torch.Tensor)):
        return "the program does not return a single tensor"
    if out.shape != ref.shape or not torch.allclose(out, ref, rtol=TOLERANCE, atol=TOLERANCE):
        return "the lifted module computes different outputs than the exported program"
    n = example.shape[0]
    if two.shape[0] != 2 * n or not torch.allclose(two[:n], ref, rtol=1e-4, atol=1e-4):
        return "the lifted module does not run at another batch size"
    return ""


def _quiet():
    from advisor.quiet import quiet
    return quiet(stdout=False)
