"""What the rule engine sees: plain data distilled from a profile, the target and the model.

The engine never measures and never imports torch: the caller (api) builds a `Situation` from
the measured profile (JSON dict), the target profile, a few structural model facts and the
registry's pass flags.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from advisor.decide.factors import Factors


@dataclass(frozen=True)
class PassFlags:
    """The registry's declaration of a pass, as plain data (built by the api from the registry,
    so the engine never imports a pass module).

    `knob`/`knob_direction`: the config field a rule may tune by measurement and which way it
    compresses harder ("increasing", "decreasing", "unordered"); `fallback_field`: the config field
    holding the budget of the pass's accuracy-aware fallback (None: it has none).
    """

    name: str
    family: str
    stage: str = "torch"
    trains: bool = False
    needs_full_retrain: bool = False
    needs_labels: bool = False
    needs_calibration: bool = False
    devices: tuple[str, ...] = ("cpu", "cuda")
    knob: str | None = None
    knob_direction: str | None = None
    fallback_field: str | None = None


@dataclass(frozen=True)
class Situation:
    factors: Factors
    device: str  # cpu | cuda
    precisions: tuple[str, ...] = ("fp32",)
    sparse_kernels: tuple[str, ...] = ()
    emulated: bool = False
    memory_budget_mb: float | None = None
    conv_share: float = 0.0  # share of measured time in convolutions
    linear_share: float = 0.0
    latency_ms: float | None = None
    peak_memory_mb: float | None = None
    size_mb: float | None = None
    params: int | None = None
    flops: int | None = None
    editable: bool = True  # an eager module with real layers (structured passes need it)
    is_onnx: bool = False  # the input is an ONNX file: only ONNX-stage passes apply
    lift_refused: str = ""  # why an exported graph could not be lifted into layers
    has_batchnorm: bool = False
    has_depthwise: bool = False
    spatial_convs: int = 0  # k x k convolutions (k > 1), groups == 1: Tucker-2 candidates
    isa: tuple[str, ...] = ()  # avx2, avx512f, avx512_vnni, amx, neon, dotprod ...
    has_val_data: bool = False
    has_train_data: bool = False
    passes: dict[str, PassFlags] = field(default_factory=dict)

    def has(self, *names: str) -> bool:
        return all(n in self.passes for n in names)

    @property
    def int8_kernels(self) -> bool:
        """Fast int8 dot products: VNNI/AMX on x86, dotprod on Arm (else int8 gains are modest)."""
        return any(f in self.isa for f in ("avx512_vnni", "avx_vnni", "vnni", "amx_int8", "amx",
                                           "dotprod", "asimddp"))


def situation_from(profile: dict[str, Any], target: dict[str, Any], facts: dict[str, Any],
                   factors: Factors, passes: dict[str, PassFlags], *, has_val_data: bool,
                   has_train_data: bool) -> Situation:
    """Build a Situation from JSON-like dicts (profile.to_json(), target, model facts)."""
    shares = _kind_shares(profile)
    lat = profile.get("latency_ms") or {}
    host = profile.get("host") or {}
    isa = tuple(host.get("isa") or host.get("isa_flags") or ())
    return Situation(
        factors=factors, device=target.get("device", "cpu"),
        precisions=tuple(target.get("precisions", ("fp32",))),
        sparse_kernels=tuple(target.get("sparse_kernels", ())),
        emulated=bool(target.get("emulated", False)),
        memory_budget_mb=target.get("memory_budget_mb"),
        conv_share=shares.get("conv", 0.0), linear_share=shares.get("linear", 0.0),
        latency_ms=lat.get("p50") if isinstance(lat, dict) else None,
        peak_memory_mb=profile.get("peak_memory_mb"), size_mb=profile.get("size_mb"),
        params=profile.get("params"), flops=profile.get("flops"),
        editable=bool(facts.get("editable", True)), is_onnx=bool(facts.get("is_onnx", False)),
        lift_refused=str(facts.get("lift_refused") or ""),
        has_batchnorm=bool(facts.get("has_batchnorm")),
        has_depthwise=bool(facts.get("has_depthwise")),
        spatial_convs=int(facts.get("spatial_convs", 0)), isa=isa,
        has_val_data=has_val_data, has_train_data=has_train_data, passes=passes)


def _kind_shares(profile: dict[str, Any]) -> dict[str, float]:
    """Time share per layer kind (conv/linear/other), from the profile's hot spots."""
    hs = profile.get("hotspots")
    for key in ("kind_shares", "by_kind", "shares"):
        if isinstance(hs, dict) and isinstance(hs.get(key), dict):
            return {k: float(v if not isinstance(v, dict) else v.get("share", 0.0))
                    for k, v in hs[key].items()}
        if isinstance(profile.get(key), dict):
            return {k: float(v) for k, v in profile[key].items()}
    layers = hs.get("layers") if isinstance(hs, dict) else hs
    totals: dict[str, float] = {}
    for row in layers or []:
        totals[row.get("kind", "other")] = totals.get(row.get("kind", "other"), 0.0) + \
            float(row.get("share", 0.0))
    return totals
