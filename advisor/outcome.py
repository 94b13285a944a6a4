"""One trial's outcome, derived once: every figure the table, plot, Pareto front, selection and
`apply` use comes from here.

A trial returns raw measurements (its own latency in a fresh worker, a paired timing against the
baseline artefact, size, accuracy, agreement). `derive_outcome` turns them into the figures the
user sees, once:

- **latency** = the baseline's p50 on the candidate's runtime / the speed-up paired against that
  baseline (candidate and baseline alternating in one process, ratio of fastest calls): the robust
  comparison on a shared host. The candidate's separately measured p50 is kept as `own_p50` and
  shown as such. Without a paired timing, latency is the own p50 (`latency_source` says which).
- **speed-up** = the report's baseline latency (the original on its fastest runtime, what the user
  would ship without advisor) / latency, so latency x speed-up = baseline latency for every
  candidate, whatever its runtime, and ranking by speed-up is ranking by plotted latency.
- **accuracy drop** in points against the baseline's validation accuracy, and the allowed drop
  (`Factors.allowed_drop_points`) next to it; unverified runs carry the top-1 disagreement.
- the **artefact** path and its sha256: what `--apply` ships and `advisor apply` checks against.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from advisor.fileio import sha256_file

__all__ = ["TrialOutcome", "derive_outcome", "sha256_file", "LATENCY_METHOD"]

LATENCY_METHOD = ("latency = the baseline's p50 on the candidate's runtime / the speed-up timed "
                  "with candidate and baseline alternating in one process (ratio of fastest "
                  "calls); speed-up = the baseline (fastest runtime) / latency; 'own p50' is "
                  "each candidate's separate measurement")


@dataclass
class TrialOutcome:
    runtime: str
    latency_ms: dict  # {"p50": the one figure, "own_p50", "p90", "cv" (own measurement)}
    latency_source: str  # "paired" or "separate"
    baseline_latency_ms: float  # the report's baseline p50: latency x speed-up equals it
    speedup: float | None
    speedup_source: str
    size_mb: float
    size_ratio: float | None
    size_stored_as: str
    peak_memory_mb: float | None
    accuracy: float | None
    accuracy_drop: float | None  # points below the baseline's validation accuracy
    allowed_drop: float  # points
    agreement: dict | None
    disagreement: float | None  # points of top-1 disagreement with the original
    paired: dict | None = None
    # [low, high] of the speed-up over consecutive stretches of the paired run (its noise):
    # candidates whose ranges overlap are ties for the selection (`advisor.search.select`)
    speedup_range: list | None = None
    # one-sided 95% upper bound on the drop from the paired samples (`measure.drop_bound`),
    # with the samples it rests on and how many the candidate got wrong / right vs the baseline
    accuracy_drop_upper: float | None = None
    drop_samples: int | None = None
    drop_worse_better: list | None = None
    artifact: str | None = None
    artifact_sha256: str | None = None
    extra: dict = field(default_factory=dict)  # other raw facts the trial reported

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        extra = d.pop("extra")
        return {**extra, **d}


def derive_outcome(raw: dict, *, runtime: str, baseline_latency: dict[str, float],
                   baseline_size_mb: float, baseline_accuracy: float | None,
                   allowed_drop: float, artifact: str | None = None,
                   baseline_correct=None) -> TrialOutcome:
    """The figures of one trial from its raw measurements (see the module docstring)."""
    own = dict(raw.get("latency_ms") or {})
    same_runtime = baseline_latency.get(runtime) or min(baseline_latency.values())
    reference = min(baseline_latency.values())
    best_runtime = min(baseline_latency, key=baseline_latency.get)
    paired = raw.get("paired") or None
    speedup_range = None
    if paired and paired.get("speedup"):
        p50, source = same_runtime / float(paired["speedup"]), "paired"
        # on the baseline's own runtime this is the paired ratio itself (the factor is 1.0)
        speedup = float(paired["speedup"]) * (reference / same_runtime)
        speedup_text = (f"paired with the {runtime} baseline in one process (ratio of fastest "
                        f"calls), relative to the baseline on {best_runtime}")
        if paired.get("speedup_low") and paired.get("speedup_high"):
            scale = reference / same_runtime
            speedup_range = [float(paired["speedup_low"]) * scale,
                             float(paired["speedup_high"]) * scale]
    else:
        p50, source = own.get("p50"), "separate"
        speedup = reference / p50 if p50 else None
        speedup_text = f"separate measurements, relative to the baseline on {best_runtime}"
    accuracy = raw.get("accuracy")
    drop = (baseline_accuracy - accuracy) * 100 \
        if baseline_accuracy is not None and accuracy is not None else None
    bound = _drop_bound(raw.get("correct"), baseline_correct)
    agreement = raw.get("agreement") or None
    disagreement = (1 - agreement["top1_agreement"]) * 100 if agreement else None
    size = float(raw["size_mb"])
    known = {"latency_ms", "paired", "accuracy", "agreement", "size_mb", "size_stored_as",
             "peak_memory_mb", "runtime", "correct"}
    return TrialOutcome(
        runtime=runtime,
        latency_ms={"p50": p50, "own_p50": own.get("p50"), "p90": own.get("p90"),
                    "cv": own.get("cv")},
        latency_source=source, baseline_latency_ms=reference, speedup=speedup,
        speedup_source=speedup_text, size_mb=size,
        size_ratio=size / baseline_size_mb if baseline_size_mb else None,
        size_stored_as=raw.get("size_stored_as", "file"),
        peak_memory_mb=raw.get("peak_memory_mb"), accuracy=accuracy, accuracy_drop=drop,
        allowed_drop=allowed_drop, agreement=agreement, disagreement=disagreement,
        paired=paired, speedup_range=speedup_range,
        accuracy_drop_upper=bound["upper"] if bound else None,
        drop_samples=bound["n"] if bound else None,
        drop_worse_better=[bound["worse"], bound["better"]] if bound else None,
        artifact=artifact,
        artifact_sha256=sha256_file(artifact) if artifact and Path(artifact).is_file() else None,
        extra={k: v for k, v in raw.items() if k not in known})


def _drop_bound(packed: dict | None, baseline_correct) -> dict | None:
    """The paired drop bound, when both the trial's and the baseline's flags are known."""
    if packed is None or baseline_correct is None:
        return None
    from advisor.measure.drop_bound import paired_drop, unpack

    flags = unpack(packed)
    if flags.shape != baseline_correct.shape:
        return None
    return paired_drop(baseline_correct, flags)
