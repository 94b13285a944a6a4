"""Channel-importance criteria for structured pruning, as torch-pruning importances.

Each criterion scores the channels of a torch-pruning *group* (all layers whose channels are
coupled: a conv's filters, its BatchNorm, the next layer's inputs, a residual add's partners)
and returns one score per channel; low scores are pruned first. Every criterion has
`prepare(model)`, called before each pruning step on the model as it is then, so that
data-dependent criteria (HRank, Taylor) see the current channels.

- ``l1`` / ``l2`` — filter magnitude, *Pruning Filters for Efficient ConvNets* (Li et al., 2017;
  arXiv:1608.08710); torch-pruning's group magnitude importance (mean over the coupled layers).
- ``bn_scale`` — the BatchNorm scaling factor |γ|, *Learning Efficient Convolutional Networks
  through Network Slimming* (Liu et al., 2017; arXiv:1708.06519). Scores are left unnormalised,
  as in the paper, so a global threshold compares γ across layers (the L1 penalty on γ that
  makes this meaningful is applied by the structured pass when a retraining budget exists).
- ``hrank`` — *HRank: Filter Pruning using High-Rank Feature Maps* (Lin et al., 2020;
  arXiv:2002.10179): the average matrix rank of each filter's output feature maps over a few
  calibration batches (the rank is stable across batches, so a few suffice). Implemented here as
  a torch-pruning `Importance`: forward hooks on every conv collect ranks; a group's score is the
  mean over its convs' outputs. Groups without a conv output (Linear-only groups: a vector has no
  rank) fall back to L2 magnitude and are listed in `fallback_groups`.
- ``taylor`` — first-order Taylor expansion of the loss, *Importance Estimation for Neural
  Network Pruning* (Molchanov et al., 2019; arXiv:1906.10771); gradients are accumulated over a
  few labelled batches before each step.
"""
from __future__ import annotations

from typing import Iterable, Literal

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.pruner import function as tpf

Criterion = Literal["l1", "l2", "bn_scale", "hrank", "taylor"]
CRITERIA: tuple[str, ...] = ("l1", "l2", "bn_scale", "hrank", "taylor")

_CONV_OUT = (tpf.prune_conv_out_channels, tpf.prune_depthwise_conv_out_channels)


class Magnitude(tp.importance.GroupMagnitudeImportance):
    """L1 (p=1) or L2 (p=2) magnitude of each channel's weights, averaged over the group."""

    def __init__(self, p: int, normalizer: str | None = "mean"):
        super().__init__(p=p, group_reduction="mean", normalizer=normalizer)

    def prepare(self, model: nn.Module) -> None:
        return None


class BNScale(tp.importance.BNScaleImportance):
    """|γ| of the BatchNorm layers in the group (Network Slimming); None for groups without BN.

    Equal γ (e.g. an untrained network, all 1.0) would all fall under one global threshold at
    once; a tiny share of the filters' L2 magnitude orders such ties.
    """

    def __init__(self, normalizer: str | None = None, tie_break: float = 1e-6):
        super().__init__(group_reduction="mean", normalizer=normalizer)
        self.tie_break = tie_break
        self.magnitude = Magnitude(p=2, normalizer=None)

    def prepare(self, model: nn.Module) -> None:
        return None

    def __call__(self, group) -> torch.Tensor | None:
        score = super().__call__(group)
        if score is None or not self.tie_break:
            return score
        magnitude = self.magnitude(group)
        if magnitude is None:
            return score
        return score + self.tie_break * magnitude / magnitude.max().clamp(min=1e-12)


class HRank(tp.importance.Importance):
    """Average rank of each conv filter's output feature maps over calibration batches."""

    def __init__(self, batches: list[torch.Tensor], normalizer: str | None = "mean",
                 tie_break: float = 1e-3):
        if not batches:
            raise ValueError("HRank needs at least one calibration batch")
        self.batches = batches
        self.normalizer = normalizer
        self.tie_break = tie_break  # small L2 share so channels of equal rank are ordered
        self.ranks: dict[nn.Module, torch.Tensor] = {}
        self.fallback = Magnitude(p=2, normalizer=None)
        self.fallback_groups: set[str] = set()

    @torch.no_grad()
    def prepare(self, model: nn.Module) -> None:
        """Run the calibration batches and record each conv's mean output-map rank per channel."""
        sums: dict[nn.Module, torch.Tensor] = {}
        counts: dict[nn.Module, int] = {}

        def hook(module, _inputs, output):
            if output.dim() != 4:
                return
            # (N, C, H, W) -> rank of every HxW map, averaged over the batch
            r = torch.linalg.matrix_rank(output.detach().float()).float().sum(0)
            sums[module] = sums.get(module, 0) + r
            counts[module] = counts.get(module, 0) + output.shape[0]

        handles = [m.register_forward_hook(hook) for m in model.modules()
                   if isinstance(m, nn.Conv2d)]
        was_training = model.training
        model.eval()
        try:
            for x in self.batches:
                model(x)
        finally:
            for h in handles:
                h.remove()
            model.train(was_training)
        self.ranks = {m: sums[m] / counts[m] for m in sums}

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor | None:
        n = len(group[0].idxs)
        total = torch.zeros(n)
        hits = torch.zeros(n)
        for i, (dep, idxs) in enumerate(group):
            layer = dep.target.module
            if dep.handler not in _CONV_OUT or layer not in self.ranks:
                continue
            root = torch.as_tensor(group[i].root_idxs, dtype=torch.long)
            local = self.ranks[layer][torch.as_tensor(idxs, dtype=torch.long)]
            total.scatter_add_(0, root, local)
            hits.scatter_add_(0, root, torch.ones_like(local))
        magnitude = self.fallback(group)
        if hits.sum() == 0:  # no conv output in this group: no maps to rank
            if magnitude is not None:
                self.fallback_groups.add(_root_name(group))
            return _normalize(magnitude, self.normalizer)
        score = total / hits.clamp(min=1)
        if magnitude is not None and self.tie_break:
            score = score + self.tie_break * magnitude / magnitude.max().clamp(min=1e-12)
        return _normalize(score, self.normalizer)


class Taylor(tp.importance.GroupTaylorImportance):
    """|w · dL/dw| summed per channel (group mean); gradients from a few labelled batches."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]],
                 normalizer: str | None = "mean"):
        if not batches:
            raise ValueError("Taylor importance needs at least one labelled batch")
        super().__init__(group_reduction="mean", normalizer=normalizer)
        self.batches = batches

    def prepare(self, model: nn.Module) -> None:
        """Accumulate the loss gradients of the current model over the batches."""
        was_training = model.training
        model.eval()  # BN statistics stay fixed; the gradients are of the deployed function
        model.zero_grad(set_to_none=True)
        loss_fn = nn.CrossEntropyLoss()
        try:
            with torch.enable_grad():
                for x, y in self.batches:
                    loss_fn(model(x), y).backward()
        finally:
            model.train(was_training)

    def __call__(self, group) -> torch.Tensor | None:
        for dep, _ in group:  # a layer not reached by the loss has no gradient: skip the group
            w = getattr(dep.target.module, "weight", None)
            if isinstance(w, torch.Tensor) and w.requires_grad and w.grad is None:
                return None
        return super().__call__(group)


def make_importance(criterion: str, scope: str, *,
                    calib_batches: Iterable[torch.Tensor] = (),
                    labelled_batches: Iterable[tuple[torch.Tensor, torch.Tensor]] = ()):
    """The importance object for `criterion`.

    Global scope ranks channels of different layers against each other: magnitude, HRank and
    Taylor scores are normalised by their group mean (torch-pruning's default) so layers of
    different scale compare; BN γ is compared raw, as Network Slimming does.
    """
    norm = "mean" if scope == "global" else None
    if criterion == "l1":
        return Magnitude(1, norm)
    if criterion == "l2":
        return Magnitude(2, norm)
    if criterion == "bn_scale":
        return BNScale(None)
    if criterion == "hrank":
        return HRank(list(calib_batches), norm)
    if criterion == "taylor":
        return Taylor(list(labelled_batches), norm)
    raise ValueError(f"unknown criterion {criterion!r}; known: {', '.join(CRITERIA)}")


def _normalize(score: torch.Tensor | None, normalizer: str | None) -> torch.Tensor | None:
    if score is None or normalizer is None:
        return score
    if normalizer == "mean":
        return score / score.mean().clamp(min=1e-12)
    raise ValueError(f"unknown normalizer {normalizer!r}")


def _root_name(group) -> str:
    dg = getattr(group, "_DG", None)
    module = group[0].dep.target.module
    if dg is not None:
        return dg._module2name.get(module, type(module).__name__)
    return type(module).__name__
