"""The hot-spot records (`LayerTime`, `Hotspots`) and the conv/linear/other classification,
shared by the torch (`advisor.measure.layers`) and ONNX Runtime (`advisor.measure.onnx_layers`)
profilers."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["LayerTime", "Hotspots", "layer_kind", "class_kind", "op_kind", "KINDS"]

KINDS = ("conv", "linear", "other")


@dataclass
class LayerTime:
    name: str
    kind: str  # conv | linear | other
    type: str  # module class, operator or ONNX op type
    ms: float  # per forward pass
    share: float  # of the whole forward pass


@dataclass
class Hotspots:
    method: str  # module-hooks | program-hooks | op-types | onnxruntime-modules | -nodes
    layers: list[LayerTime]  # sorted by time, largest first
    kind_shares: dict[str, float]
    total_ms: float
    runs: int
    threads: int | None = None
    batch_size: int = 1
    device: str = "cpu"
    notes: list[str] = field(default_factory=list)

    def top(self, n: int = 10) -> list[LayerTime]:
        return self.layers[:n]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = [{**asdict(r), "ms": round(r.ms, 5), "share": round(r.share, 5)}
                       for r in self.layers]
        d["kind_shares"] = {k: round(v, 5) for k, v in self.kind_shares.items()}
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Hotspots":
        layers = [LayerTime(r["name"], r.get("kind", "other"), r.get("type", ""),
                            float(r.get("ms", 0.0)), float(r.get("share", 0.0)))
                  for r in d.get("layers", [])]
        return cls(method=d.get("method", "unknown"), layers=layers,
                   kind_shares={k: float(v) for k, v in (d.get("kind_shares") or {}).items()},
                   total_ms=float(d.get("total_ms", 0.0)), runs=int(d.get("runs", 0)),
                   threads=d.get("threads"), batch_size=int(d.get("batch_size", 1)),
                   device=d.get("device", "cpu"), notes=list(d.get("notes", [])))


def layer_kind(module) -> str:
    """conv / linear / other from a module's class (Conv*d, ConvTranspose, CSRLinear, ...)."""
    return class_kind(type(module).__name__)


def class_kind(name: str) -> str:
    """conv / linear / other from a module class name (`Conv2d`, `CSRLinear`, ...)."""
    if "Conv" in name:
        return "conv"
    if "Linear" in name:
        return "linear"
    return "other"


def op_kind(op: str) -> str:
    """conv / linear / other from an operator name (aten::mkldnn_convolution, aten::addmm,
    ONNX Conv/Gemm/MatMul and their int8 forms QLinearConv/QGemm/MatMulInteger, ...). ONNX's
    (De)QuantizeLinear and QLinearAdd-style elementwise ops are "other", not linear layers."""
    base = op.split("::")[-1].lower()
    if base.endswith("quantizelinear"):
        return "other"
    if base.startswith("qlinear"):
        base = base[len("qlinear"):]
    if "conv" in base:
        return "conv"
    if "linear" in base or "gemm" in base or base.lstrip("_").endswith("mm") or \
            "matmul" in base or base in ("einsum",):
        return "linear"
    return "other"


def _finish(method: str, rows: list[LayerTime], total_ms: float, runs: int, **kw) -> Hotspots:
    total = total_ms if total_ms > 0 else sum(r.ms for r in rows)
    for r in rows:
        r.share = r.ms / total if total > 0 else 0.0
    rows.sort(key=lambda r: r.ms, reverse=True)
    shares = {k: 0.0 for k in KINDS}
    for r in rows:
        shares[r.kind] += r.share
    return Hotspots(method, rows, shares, total, runs, **kw)


def _median(xs: list[float]) -> float:
    import statistics
    return statistics.median(xs) if xs else 0.0
