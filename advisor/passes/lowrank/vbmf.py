"""Automatic rank choice by empirical variational Bayesian matrix factorization (EVBMF).

*Global Analytic Solution of Fully-observed Variational Bayesian Matrix Factorization*
(Nakajima, Sugiyama, Babacan & Tomioka, JMLR 14, 2013; the NIPS 2010 version is *Global
Analytic Solution for Variational Bayesian Matrix Factorization*) shows that the VB solution of
``Y = B Aᵀ + E`` (Gaussian noise of variance σ², Gaussian priors whose variances are learnt too)
is a shrunken SVD of ``Y``: a singular value γ_h survives iff it exceeds

    γ̲ = σ · sqrt(M · (1 + τ̲)(1 + α/τ̲)),    α = L/M ≤ 1 (L×M, L ≤ M),

where τ̲ is the root of ``Φ(τ) + Φ(τ/α) = 0`` with ``Φ(z) = log(z+1)/z − 1/2`` (τ̲ ≈ 2.5129·√α).
σ² itself is the minimiser of the free energy, a one-dimensional function with known bounds. So
the rank is chosen by the data alone: no energy threshold to tune.

*Compression of Deep Convolutional Neural Networks for Fast and Low Power Mobile Applications*
(Kim et al., 2015; arXiv:1511.06530) chose the two Tucker-2 ranks of every convolution this way,
from the mode-1 (output channels) and mode-2 (input channels) unfoldings of the kernel, and
recovered accuracy with a short fine-tune; `advisor.passes.factorize` does the same.

Written from the paper's formulas (numpy, float64); the free energy is minimised by a log-spaced
grid over the bounds followed by golden-section refinement, because it can have several local
minima and its derivative jumps where a singular value crosses the threshold.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["VBMFResult", "evbmf", "evbmf_rank", "threshold_tau"]


@dataclass(frozen=True)
class VBMFResult:
    rank: int  # number of singular values above the EVB threshold
    sigma2: float  # estimated noise variance
    threshold: float  # γ̲: singular values above it are kept
    singular_values: np.ndarray  # of the (L ≤ M oriented) matrix, descending
    shrunk: np.ndarray  # the EVB estimate of each singular value (0 below the threshold)


def threshold_tau(alpha: float) -> float:
    """τ̲(α): the zero of Φ(τ) + Φ(τ/α), Φ(z) = log(z+1)/z − 1/2 (decreasing; one root)."""
    def xi(t: float) -> float:
        return math.log1p(t) / t + math.log1p(t / alpha) / (t / alpha) - 1.0

    lo, hi = 1e-9, 1.0
    while xi(hi) > 0:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if xi(mid) > 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _free_energy(sigma2: np.ndarray, s2: np.ndarray, L: int, M: int, x_bar: float) -> np.ndarray:
    """The EVB free energy (up to constants) as a function of σ², for each entry of `sigma2`.

    Σ_h ψ(γ_h²/(Mσ²)) with ψ(x) = x − log x, plus, above the threshold x̲,
    log(τ+1) + α·log(τ/α + 1) − τ where τ = τ(x) solves the EVB stationarity condition.
    """
    alpha = L / M
    x = s2[None, :] / (M * sigma2[:, None])  # (grid, L)
    psi = x - np.log(x)
    above = x > x_bar
    xa = np.where(above, x, x_bar + 1.0)  # keeps the square root real where unused
    d = xa - (1.0 + alpha)
    tau = 0.5 * (d + np.sqrt(np.maximum(d * d - 4.0 * alpha, 0.0)))
    psi1 = np.log1p(tau) + alpha * np.log1p(tau / alpha) - tau
    return (psi + np.where(above, psi1, 0.0)).sum(axis=1)


def evbmf(matrix, sigma2: float | None = None) -> VBMFResult:
    """EVBMF of a real matrix: the rank, the noise variance (estimated unless given) and the
    shrunken singular values."""
    y = np.asarray(matrix.detach().cpu().double().numpy() if hasattr(matrix, "detach") else matrix,
                   dtype=np.float64)
    if y.ndim != 2 or min(y.shape) == 0:
        raise ValueError(f"evbmf needs a non-empty matrix, got shape {y.shape}")
    if y.shape[0] > y.shape[1]:
        y = y.T
    L, M = y.shape
    alpha = L / M
    s = np.linalg.svd(y, compute_uv=False)
    s2 = s * s
    total = float(s2.sum())
    if total <= 0.0:
        return VBMFResult(0, 0.0, 0.0, s, np.zeros_like(s))
    tau_bar = threshold_tau(alpha)
    x_bar = (1.0 + tau_bar) * (1.0 + alpha / tau_bar)
    if sigma2 is None:
        sigma2 = _estimate_sigma2(s2, L, M, x_bar)
    threshold = math.sqrt(M * sigma2 * x_bar)
    keep = s > threshold
    # the EVB estimate of the kept singular values (a positive-part shrinkage)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = 1.0 - (L + M) * sigma2 / s2
        shrunk = 0.5 * s * (a + np.sqrt(np.maximum(a * a - 4.0 * L * M * sigma2 ** 2 / (s2 * s2),
                                                   0.0)))
    shrunk = np.where(keep, shrunk, 0.0)
    return VBMFResult(int(keep.sum()), float(sigma2), float(threshold), s, shrunk)


def evbmf_rank(matrix) -> int:
    """The EVBMF rank of `matrix` (0 when all of it is indistinguishable from noise)."""
    return evbmf(matrix).rank


def _estimate_sigma2(s2: np.ndarray, L: int, M: int, x_bar: float) -> float:
    """Minimise the free energy over σ² within the paper's bounds.

    Upper bound: ||Y||²/(LM). Lower bound: the larger of γ²_{H̄+1}/(M x̲) and the mean energy of
    the singular values beyond H̄ = ⌈L/(1+α)⌉ − 1, the largest rank EVB can select.
    """
    alpha = L / M
    upper = float(s2.sum()) / (L * M)
    h_bar = min(max(math.ceil(L / (1.0 + alpha)) - 1, 0), L - 1)
    lower = max(float(s2[h_bar]) / (M * x_bar), float(s2[h_bar:].sum()) / (M * (L - h_bar)))
    tiny = upper * 1e-12
    lower = min(max(lower, tiny), upper)
    if upper - lower <= 1e-12 * upper:
        return upper
    grid = np.geomspace(lower, upper, 400)
    values = _free_energy(grid, s2, L, M, x_bar)
    i = int(np.argmin(values))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    f = lambda v: float(_free_energy(np.array([v]), s2, L, M, x_bar)[0])  # noqa: E731
    invphi = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = b - invphi * (b - a), a + invphi * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - invphi * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + invphi * (b - a)
            fd = f(d)
    best = min((values[i], grid[i]), (fc, c), (fd, d))
    return float(best[1])
