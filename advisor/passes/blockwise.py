"""Structured pruning block by block, where torch-pruning cannot build one graph of the model.

torch-pruning's DepGraph follows channels through convolutions, adds, concatenations and plain
flattens, but not through a reshape that *regroups* channels: ShuffleNet's channel shuffle
(`view(b, g, c/g, h, w) -> transpose -> view(b, c, h, w)`) fails inside its index mapping
(ZeroDivisionError), and a module that calls such a function cannot be given to it as a custom
op (torchvision's `channel_shuffle` is a plain function; Torch-Pruning issue #14 is open since
2020 and the maintainer's advice there is to ignore those blocks and prune around them).

This module does that generically, with DepGraph still deciding every coupling: descend from
the model into its submodules until one builds a graph, then prune only the channels *inside*
that submodule — its interface (the channels it reads and the channels it returns) stays whole,
so whatever the rest of the model does with them, shuffles included, is untouched. The
interface is found by DepGraph itself: the block is wrapped between two 1×1 probe layers, and a
layer whose output channels are coupled to either probe is part of the interface and is
ignored. For ShuffleNet-V2 this prunes each branch's hidden width (1×1 conv → depthwise conv →
1×1 conv), about half of the network's convolution FLOPs.

Each block is pruned at the same ratio (its own ranking: a global ranking across blocks would
need one graph). `replay_blocks` redoes the recorded per-block histories on the original
weights. Hand-written because no library covers this: Torch-Pruning, NNI's ModelSpeedup and
NNCF all need one traceable graph.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

# what DepGraph raises when it cannot map channels through a reshape (see the docstring)
GRAPH_ERRORS = (ZeroDivisionError, IndexError, KeyError)


@dataclass
class Block:
    """A submodule whose DepGraph builds, wrapped between its interface probes."""

    name: str
    module: nn.Module
    input_shape: tuple[int, ...]
    wrapper: nn.Module
    probes: tuple[nn.Module, nn.Module]
    interface: list[nn.Module] = field(default_factory=list)  # see `interface_layers`


class _Probed(nn.Module):
    """probe_in → block → probe_out: DepGraph couples the block's interface to the probes."""

    def __init__(self, block: nn.Module, in_ch: int, out_ch: int, ndim: int):
        super().__init__()
        self.probe_in, self.block, self.probe_out = _probe(in_ch, ndim), block, _probe(out_ch, ndim)

    def forward(self, x):
        return self.probe_out(self.block(self.probe_in(x)))


def _probe(channels: int, ndim: int) -> nn.Module:
    return nn.Conv2d(channels, channels, 1) if ndim == 4 else nn.Linear(channels, channels)


def regroups_channels(model: nn.Module, example: torch.Tensor) -> bool:
    """Whether the forward pass views a 5-D tensor back to fewer dimensions (a channel shuffle:
    `view(b, c/g, g, h, w) -> view(b, c, h, w)` after a transpose). DepGraph builds a graph over
    some such models but maps the channels wrongly (seen: IndexError while pruning), so a
    regrouping is detected up front, on the autograd graph of one forward pass."""
    x = example.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(x)
    roots = [t.grad_fn for t in (out if isinstance(out, (tuple, list)) else [out])
             if torch.is_tensor(t) and t.grad_fn is not None]
    seen, stack = set(), roots
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        sizes = getattr(node, "_saved_self_sym_sizes", None)
        kind = type(node).__name__
        if sizes is not None and len(sizes) >= 5 and ("View" in kind or "Reshape" in kind):
            return True
        stack.extend(f for f, _ in node.next_functions)
    return False


def find_blocks(model: nn.Module, example: torch.Tensor, prunable: tuple[type, ...]) -> list[Block]:
    """The largest submodules with 2-D or 4-D tensor input and output, no channel regrouping
    inside, whose graph builds."""
    calls = _record_calls(model, example)
    blocks: list[Block] = []

    def visit(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            full = f"{prefix}.{name}" if prefix else name
            if not any(isinstance(m, prunable) for m in child.modules()):
                continue
            shapes = calls.get(full)
            block = _probed(full, child, shapes) if shapes else None
            if block is not None and not regroups_channels(child,
                                                           torch.zeros(block.input_shape)):
                try:  # one DepGraph build: whether it builds, and the block's interface
                    block.interface = interface_layers(block, prunable)
                except GRAPH_ERRORS:
                    block = None
            else:
                block = None
            if block is None:
                visit(full, child)
            elif len(block.interface) < sum(isinstance(m, prunable) for m in child.modules()):
                blocks.append(block)  # something inside the interface to prune

    visit("", model)
    return blocks


def _record_calls(model: nn.Module, example: torch.Tensor) -> dict[str, tuple]:
    """Input and output shapes of every submodule called exactly once with one tensor."""
    seen: dict[str, list] = {}

    def hook(mod, args, out, name):
        ok = len(args) == 1 and torch.is_tensor(args[0]) and torch.is_tensor(out)
        seen.setdefault(name, []).append((tuple(args[0].shape), tuple(out.shape)) if ok else None)

    handles = [m.register_forward_hook(lambda mod, a, o, n=n: hook(mod, a, o, n))
               for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return {n: v[0] for n, v in seen.items() if len(v) == 1 and v[0] is not None}


def _probed(name: str, module: nn.Module, shapes: tuple) -> Block | None:
    (in_shape, out_shape) = shapes
    if len(in_shape) != len(out_shape) or len(in_shape) not in (2, 4):
        return None
    wrapper = _Probed(module, in_shape[1], out_shape[1], len(in_shape)).eval()
    return Block(name, module, in_shape, wrapper, (wrapper.probe_in, wrapper.probe_out))


def interface_layers(block: Block, prunable: tuple[type, ...]) -> list[nn.Module]:
    """Layers of the block whose output channels are coupled to its input or its output."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dg = tp.DependencyGraph().build_dependency(block.wrapper,
                                                   example_inputs=torch.zeros(block.input_shape))
    out = []
    for m in block.module.modules():
        if not isinstance(m, prunable):
            continue
        pruner = dg.get_pruner_of_module(m)
        if pruner is None:
            continue
        group = dg.get_pruning_group(m, pruner.prune_out_channels, [0])
        if any(dep.target.module in block.probes for dep, _ in group):
            out.append(m)
    return out


def replay_blocks(model: nn.Module, blocks: list[dict[str, Any]]) -> nn.Module:
    """Redo recorded per-block pruning histories on a copy of the original model."""
    model = copy.deepcopy(model).eval()
    modules = dict(model.named_modules())
    for rec in blocks:
        module = modules[rec["block"]]
        out_ch = _out_width(module, tuple(rec["input_shape"]))
        wrapper = _Probed(module, rec["input_shape"][1], out_ch, len(rec["input_shape"])).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dg = tp.DependencyGraph().build_dependency(
                wrapper, example_inputs=torch.zeros(rec["input_shape"]))
        dg.load_pruning_history([[n, bool(o), [int(i) for i in idxs]]
                                 for n, o, idxs in rec["history"]])
    return model


def _out_width(module: nn.Module, in_shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        return int(module(torch.zeros(in_shape)).shape[1])
