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

Parts: `advisor.lift_layers` (layer calls → layers, what is refused), `advisor.lift_shapes`
(reshapes that follow); this module rebuilds the hierarchy and checks the result.

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

from advisor.lift_layers import (free_name, get_path, layer_for, replace_uses, same_layer,
                                 unliftable_op)
from advisor.lift_shapes import follow_shapes, following_shape, reshape_following

__all__ = ["LiftResult", "lift_program", "reshape_following", "following_shape", "LIFT_VERSION"]

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
    stop = unliftable_op(gm.graph)
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
                child = get_path(mod, node.target)
                children[node.target] = _lift_module(child, stats) \
                    if isinstance(getattr(child, "graph", None), fx.Graph) else child
            continue
        kind, module, weight_target = layer_for(node, mod)
        if module is None:
            continue
        path = weight_target.rsplit(".", 1)[0] if "." in weight_target else weight_target + "_layer"
        if path in made and not same_layer(made[path], module) or path in children:
            path = free_name(path + "_lifted", {**made, **children})
        made.setdefault(path, module)
        with graph.inserting_before(node):
            new = graph.call_module(path, (node.args[0],))
        new.meta = dict(node.meta)
        replace_uses(node, new)
        graph.erase_node(node)
        stats.layers[kind] += 1
    stats.reshapes += follow_shapes(graph)
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
    kind, layer, _ = layer_for(work[0], mod)
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



# ---- building the module ---------------------------------------------------------------------

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
    if get_path(root, target) is not None:
        return
    holder, name = _holder(root, target)
    value = get_path(gm, target)
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
