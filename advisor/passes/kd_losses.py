"""Distillation losses: response (Hinton), feature hints (FitNets), relations (RKD).

- *Distilling the Knowledge in a Neural Network* (Hinton, Vinyals, Dean, 2015; arXiv:1503.02531):
  KL divergence between temperature-softened teacher and student distributions, multiplied by
  T² so that its gradients keep the same magnitude as the hard-label term when T changes.
- *FitNets: Hints for Thin Deep Nets* (Romero et al., 2015; arXiv:1412.6550): an intermediate
  student feature map, passed through a small learned regressor (here a 1x1 convolution, or a
  Linear for vectors) where the channel counts differ, is pulled towards the teacher's (L2).
- *Relational Knowledge Distillation* (Park, Kim, Lu, Cho, 2019; arXiv:1904.05068): the
  *relations* among a batch's embeddings are transferred — pairwise distances (normalised by
  their mean, so the absolute scale of either embedding space does not matter) and the angles
  formed by triplets — with a Huber (smooth L1) penalty. Relations need no adapter: teacher and
  student embeddings may have different widths.

All functions take batched tensors and return a scalar loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: float) -> torch.Tensor:
    """T² · KL(softmax(teacher/T) ‖ softmax(student/T)), averaged over the batch."""
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits / t, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / t, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, log_target=True,
                    reduction="batchmean") * (t * t)


def hard_label_ce(logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy over the labelled rows only (label < 0 = unlabelled); 0 if none are."""
    if labels is None:
        return logits.new_zeros(())
    mask = labels >= 0
    if not bool(mask.any()):
        return logits.new_zeros(())
    return F.cross_entropy(logits[mask], labels[mask])


def hinton_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                labels: torch.Tensor | None = None, *, temperature: float = 4.0,
                alpha: float = 0.9, hard_label_weight: float = 0.1) -> torch.Tensor:
    """alpha · T²·KL(soft teacher ‖ soft student) + hard_label_weight · CE(student, labels).

    `labels=None` (or all labels < 0) leaves only the soft term: the teacher labels the data.
    """
    loss = alpha * soft_kl(student_logits, teacher_logits, temperature)
    if hard_label_weight:
        loss = loss + hard_label_weight * hard_label_ce(student_logits, labels)
    return loss


def hint_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor,
              adapter: nn.Module | None = None) -> torch.Tensor:
    """FitNets hint: mean squared error between adapter(student feature) and the teacher's.

    Where the spatial sizes differ (an explicitly chosen pair), the larger map is average-pooled
    to the smaller one first.
    """
    s = adapter(student_feature) if adapter is not None else student_feature
    t = teacher_feature
    if s.dim() == 4 and s.shape[-2:] != t.shape[-2:]:
        size = (min(s.shape[-2], t.shape[-2]), min(s.shape[-1], t.shape[-1]))
        s = F.adaptive_avg_pool2d(s, size)
        t = F.adaptive_avg_pool2d(t, size)
    return F.mse_loss(s, t)


def make_adapter(student_channels: int, teacher_channels: int, dims: int) -> nn.Module:
    """The FitNets regressor: 1x1 conv for feature maps (dims 4), Linear for vectors (dims 2)."""
    if dims == 4:
        return nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=False)
    return nn.Linear(student_channels, teacher_channels, bias=False)


def _pairwise_distances(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Euclidean distance matrix with a zero diagonal and finite gradients everywhere."""
    sq = (e * e).sum(dim=1)
    d2 = (sq.unsqueeze(0) + sq.unsqueeze(1) - 2.0 * e @ e.t()).clamp(min=eps)
    d = d2.sqrt()
    return d * (1.0 - torch.eye(len(e), device=e.device, dtype=e.dtype))


def _normalised_distances(e: torch.Tensor) -> torch.Tensor:
    d = _pairwise_distances(e)
    positive = d[d > 0]
    mean = positive.mean() if positive.numel() else d.new_ones(())
    return d / mean.clamp(min=1e-12)


def rkd_distance_loss(student_embedding: torch.Tensor,
                      teacher_embedding: torch.Tensor) -> torch.Tensor:
    """RKD-D: Huber loss between the mean-normalised pairwise distance matrices."""
    s = student_embedding.flatten(1)
    t = teacher_embedding.flatten(1)
    with torch.no_grad():
        t_d = _normalised_distances(t.detach())
    s_d = _normalised_distances(s)
    return F.smooth_l1_loss(s_d, t_d)


def _triplet_cosines(e: torch.Tensor) -> torch.Tensor:
    """cos of the angle at every anchor j between e_i and e_k: all N³ values."""
    diff = e.unsqueeze(0) - e.unsqueeze(1)  # diff[j, i] = e_i - e_j
    unit = F.normalize(diff, p=2, dim=2)
    return torch.bmm(unit, unit.transpose(1, 2)).reshape(-1)


def rkd_angle_loss(student_embedding: torch.Tensor,
                   teacher_embedding: torch.Tensor) -> torch.Tensor:
    """RKD-A: Huber loss between the triplet angle cosines of teacher and student embeddings."""
    s = student_embedding.flatten(1)
    t = teacher_embedding.flatten(1)
    with torch.no_grad():
        t_a = _triplet_cosines(t.detach())
    return F.smooth_l1_loss(_triplet_cosines(s), t_a)
