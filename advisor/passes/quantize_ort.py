"""ONNX Runtime int8: static (calibrated QDQ), dynamic, and weight-only storage.

- `int8_static`: `quant_pre_process` (symbolic shape inference + graph optimisation), then
  `quantize_static` in QDQ format with per-channel weights, calibrated on the user's data
  (MinMax, Entropy or Percentile; sample count configurable). The activation/weight types follow
  ONNX Runtime's CPU guidance per target: x86 uint8 activations with int8 weights, 7-bit weights
  (`reduce_range`) only without VNNI (the u8s8 VPMADDUBSW path can saturate); Arm int8/int8 with
  symmetric activations. A target emulated on a host of another architecture gets the host's
  types, because that is where it is measured (s8 activations ran 2.5x slower than u8 on x86). With `max_drop` set, the accuracy-aware fallback
  (`advisor.passes.fallback`) keeps the most sensitive layers in fp32 until the drop fits.
  Measured here: a residual CNN at 224 px went 9.5 -> 3.9 ms.
- `int8_dynamic`: `quantize_dynamic` (weights int8 offline, activations quantized at run time).
  Meant for Linear/LSTM-heavy models; on a CNN here it ran 7x *slower* than fp32 (ConvInteger
  has no fast kernel), so the pass measures and reports the speed against fp32, never assumes it.
- `weight_only_int8`: weights stored as int8 + per-channel scale, compute stays fp32: for size
  goals (about 4x smaller files). `expand="load"` writes `Cast(int8->float) * scale`, which ONNX
  Runtime constant-folds when the session loads, so it runs at fp32 speed (measured: MLP 0.092 vs
  0.093 ms); `expand="run"` writes `DequantizeLinear`, which ONNX Runtime keeps in the graph (to
  preserve QDQ patterns) and runs on every call: weights stay int8 in memory, for RAM budgets,
  at a cost (MLP 0.29 vs 0.093 ms).

Paper: Jacob et al., "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference" (arXiv:1712.05877); calibration methods as in Migacz,
"8-bit Inference with TensorRT" (GTC 2017) and Wu et al., "Integer Quantization for Deep
Learning Inference" (arXiv:2004.09602).

Latency inside these passes is measured in-process with paired, interleaved runs of the two
models being compared (`paired_latency`): the trial re-measures the final artefact on the target
in a fresh subprocess anyway, and interleaving cancels the load drift of a shared machine, which
matters for the sub-millisecond per-layer costs the fallback reports.
"""
from __future__ import annotations

import contextlib
import io
import logging
import platform
import shutil
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from advisor.errors import DataError, PassError
from advisor.passes.base import OnnxArtifact, PassContext, PassResult, register_pass

# ---- configs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Int8StaticConfig:
    """Static int8 (QDQ). `activation_type`/`weight_type`/`reduce_range`: "auto"/None = per target.

    `exclude_nodes`: ONNX node names or layer names (`layers.0.conv1`, `layers.0:Add`) kept fp32.
    `max_drop`: accuracy budget in points for the accuracy-aware fallback (None = plain int8).
    """

    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    num_samples: int = 256
    per_channel: bool = True
    activation_type: Literal["auto", "uint8", "int8"] = "auto"
    weight_type: Literal["auto", "int8", "uint8"] = "auto"
    reduce_range: bool | None = None
    percentile: float = 99.999
    exclude_nodes: tuple[str, ...] = ()
    max_drop: float | None = None
    sensitivity_samples: int = 128
    max_reverted: int | None = None
    measure_speedup: bool = True


@dataclass(frozen=True)
class Int8DynamicConfig:
    """Dynamic int8: `op_types` empty = ONNX Runtime's default set (Conv, MatMul, Gemm, LSTM ...)."""

    per_channel: bool = False
    weight_type: Literal["auto", "int8", "uint8"] = "auto"
    reduce_range: bool | None = None
    op_types: tuple[str, ...] = ()
    exclude_nodes: tuple[str, ...] = ()
    measure_speedup: bool = True


@dataclass(frozen=True)
class WeightOnlyInt8Config:
    """int8 weight storage: symmetric, per output channel; tensors under `min_elements` stay fp32.

    `expand`: "load" (Cast+Mul, folded once when the session loads: fp32 speed) or "run"
    (DequantizeLinear on every call: int8 weights in memory, slower).
    """

    per_channel: bool = True
    min_elements: int = 256
    op_types: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm", "MatMul")
    exclude_nodes: tuple[str, ...] = ()
    expand: Literal["load", "run"] = "load"  # fp32 weights built at session load / every call
    measure_speedup: bool = True


# ---- target-dependent types ----------------------------------------------------------------

_VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "avx512vnni", "vnni")


def host_cpu() -> dict[str, Any]:
    """Architecture and int8-relevant ISA flags of this host (Linux /proc/cpuinfo; else empty)."""
    machine = platform.machine().lower()
    arch = "arm" if machine.startswith(("arm", "aarch64")) else \
        "x86" if machine in ("x86_64", "amd64", "i386", "i686") else machine
    flags: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("flags", "features")):
                flags.update(line.split(":", 1)[1].split())
                break
    return {"arch": arch, "flags": flags}


def target_cpu(target: Any) -> dict[str, Any]:
    """The CPU the target deploys to: its declared arch/ISA if any, Arm if its name says so
    (`edge-arm`), else this host. (Descriptions are not read: "x86-64 or Arm" is common.)"""
    import re

    host = host_cpu()
    if target is None:
        return {**host, "source": "host"}
    flags = set(getattr(target, "isa", ()) or ())
    arch = getattr(target, "arch", None)
    words = set(re.split(r"[^a-z0-9]+", str(getattr(target, "name", "") or "").lower()))
    if arch is None and words & {"arm", "arm64", "aarch64", "neon", "cortex", "graviton"}:
        arch = "arm"
    if arch is None:
        return {**host, "flags": flags or host["flags"], "source": "host"}
    arch = str(arch).lower()
    emulated = bool(getattr(target, "emulated", False)) and arch != host["arch"]
    return {"arch": arch, "flags": flags, "source": "target",
            "emulated_on": host if emulated else None}


def choose_int8_types(target: Any, activation: str = "auto", weight: str = "auto",
                      reduce_range: bool | None = None) -> dict[str, Any]:
    """Activation/weight types and reduce_range for static int8 on `target`, with the reason.

    Follows ONNX Runtime's guidance for CPU inference (quantize_static docstring): x86 u8 activations
    with s8 weights, reduce_range only without VNNI; Arm s8/s8 with symmetric activations.
    """
    cpu = target_cpu(target)
    note = ""
    if cpu.get("emulated_on"):
        # the artefact is measured on this host: s8 activations ran 2.5x slower than u8 on x86
        # here (ResNet 224 px: 25.6 vs 10.2 ms), which would misreport int8 for the device
        note = (f" (target emulated on this {cpu['emulated_on']['arch']} host: types chosen for "
                f"the host; ONNX Runtime's Arm kernels run u8/s8 too)")
        cpu = {**cpu["emulated_on"], "source": "host (emulation)"}
    vnni = any(f in cpu["flags"] for f in _VNNI_FLAGS)
    if cpu["arch"] == "arm":
        auto = {"activation": "int8", "weight": "int8", "reduce_range": False,
                "activation_symmetric": True,
                "reason": "Arm: s8 activations (symmetric) and s8 weights suit the Arm int8 kernels"}
    elif vnni:
        auto = {"activation": "uint8", "weight": "int8", "reduce_range": False,
                "activation_symmetric": False,
                "reason": "x86 with VNNI: u8 activations, s8 weights; VNNI accumulates without "
                          "saturation, so full 8-bit weights"}
    else:
        auto = {"activation": "uint8", "weight": "int8", "reduce_range": True,
                "activation_symmetric": False,
                "reason": "x86 without VNNI: u8 activations, s8 weights with 7-bit range "
                          "(reduce_range) against VPMADDUBSW saturation"}
    auto["reason"] += note
    out = dict(auto)
    if activation != "auto":
        out["activation"] = activation
        out["activation_symmetric"] = False
    if weight != "auto":
        out["weight"] = weight
    if reduce_range is not None:
        out["reduce_range"] = bool(reduce_range)
    if (activation, weight, reduce_range) != ("auto", "auto", None):
        out["reason"] = "set in the config; per-target default: " + auto["reason"]
    out.update(arch=cpu["arch"], vnni=vnni, cpu_source=cpu["source"])
    return out


def _quant_type(name: str):
    from onnxruntime.quantization import QuantType

    return {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[name]


# ---- ONNX model helpers --------------------------------------------------------------------

# ops ONNX Runtime quantizes only when their input already is (data movement, clipping)
_LATENT_OPS = {"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Split",
               "Gather", "GatherElements", "MaxPool", "Pad", "Relu", "Clip", "Resize", "Where",
               "TopK", "CumSum", "Identity"}


def load_onnx(path: str | Path):
    import onnx

    return onnx.load(str(path))


def input_spec(path: str | Path) -> tuple[str, list[int | str]]:
    """(name, dims) of the model's first graph input that is not an initializer."""
    model = load_onnx(path)
    inits = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                for d in inp.type.tensor_type.shape.dim]
        return inp.name, dims
    raise PassError(f"{path}: the ONNX model has no input")


def layer_names(model) -> dict[str, str]:
    """node name -> human layer name: the weight's module (`layers.0.conv1`) for layers with
    weights, `<module scope>:<op>` (`layers.0:Add`) for the others."""
    inits = {i.name for i in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        label = None
        for name in node.input[1:2]:
            if name in inits and name.endswith(".weight"):
                label = name[: -len(".weight")]
        if label is None:
            scopes = next((p.value for p in node.metadata_props
                           if p.key == "pkg.torch.onnx.name_scopes"), None)
            if scopes:
                parts = [s.strip(" '\"") for s in scopes.strip("[]").split(",")]
                module = next((p for p in reversed(parts[:-1]) if p), "")
                label = f"{module}:{node.op_type}" if module else f"{node.op_type}:{node.name}"
            else:
                label = node.name
        out[node.name] = label
    return out


def resolve_nodes(model, names: tuple[str, ...] | list[str]) -> list[str]:
    """ONNX node names for `names` given as node names or layer names; unknown names are an error."""
    labels = layer_names(model)
    by_label: dict[str, list[str]] = {}
    for node, label in labels.items():
        by_label.setdefault(label, []).append(node)
    out: list[str] = []
    for n in names:
        if n in labels:
            out.append(n)
        elif n in by_label:
            out.extend(by_label[n])
        else:
            raise PassError(f"no node or layer named {n!r} in the ONNX model",
                            f"known layers include: {', '.join(list(by_label)[:12])}")
    return list(dict.fromkeys(out))


def quantizable_nodes(model) -> list[str]:
    """Nodes that carry their own quantization in QDQ (compute ops, not data movement)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    ops = (set(QDQRegistry) | set(QLinearOpsRegistry)) - _LATENT_OPS
    return [n.name for n in model.graph.node if n.op_type in ops]


def runs_in_int8(model, node) -> bool:
    """In QDQ form ONNX Runtime fuses a node into an int8 kernel when its data (and weight)
    inputs come from DequantizeLinear and its outputs go only to QuantizeLinear."""
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    consumers: dict[str, list[str]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    graph_outputs = {o.name for o in model.graph.output}
    inputs = [i for i in node.input[:2] if i]
    if not inputs or not all(producers.get(i) == "DequantizeLinear" for i in inputs):
        return False
    return all(o not in graph_outputs and consumers.get(o) and
               all(c == "QuantizeLinear" for c in consumers[o]) for o in node.output)


def fp32_nodes_after_quantization(model, nodes: list[str]) -> list[str]:
    """Of `nodes`, those that do not run as int8 kernels in `model` (see `runs_in_int8`)."""
    by_name = {n.name: n for n in model.graph.node}
    return [name for name in nodes if name in by_name and not runs_in_int8(model, by_name[name])]


def op_counts(path: str | Path) -> dict[str, int]:
    return dict(Counter(n.op_type for n in load_onnx(path).graph.node))


@contextlib.contextmanager
def _quiet():
    """ONNX Runtime's quantization tools log and print freely; keep the advisor's output clean."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def preprocess(src: Path, dst: Path) -> dict[str, Any]:
    """`quant_pre_process` (shape inference + optimisation); falls back to fewer steps if one fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    attempts = ({}, {"skip_symbolic_shape": True}, {"skip_optimization": True,
                                                     "skip_symbolic_shape": True})
    last: Exception | None = None
    for kwargs in attempts:
        try:
            with _quiet():
                quant_pre_process(str(src), str(dst), **kwargs)
            return {"preprocess": "full" if not kwargs else ",".join(sorted(kwargs))}
        except Exception as e:  # a shape-inference failure on an unusual graph is not fatal
            last = e
    shutil.copyfile(src, dst)
    return {"preprocess": f"skipped ({type(last).__name__})"}


# ---- data ----------------------------------------------------------------------------------


@dataclass
class Batches:
    """Model-ready input batches (float32, chunked to the model's batch) and labels if known."""

    arrays: list[np.ndarray]
    labels: np.ndarray | None

    @property
    def count(self) -> int:
        return sum(a.shape[0] for a in self.arrays)


def collect_batches(loader, max_samples: int | None, dims: list[int | str],
                    labelled: bool = True, equal_batches: bool = False) -> Batches:
    """Take up to `max_samples` inputs from `loader` ((inputs, labels) batches or bare inputs),
    checked against the model input `dims` and chunked to its batch size if that is fixed.

    `equal_batches`: every chunk the same size (ONNX Runtime's histogram calibrators stack them).
    """
    import torch

    if loader is None:
        raise DataError("no data loader given")
    xs, ys, n = [], [], 0
    for batch in loader:
        x, y = (batch[0], batch[1]) if isinstance(batch, (list, tuple)) and len(batch) > 1 else \
            (batch[0] if isinstance(batch, (list, tuple)) else batch, None)
        x = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else \
            np.asarray(x, np.float32)
        if max_samples is not None:
            x = x[: max_samples - n]
        if x.ndim != len(dims) or any(isinstance(d, int) and d > 0 and d != s
                                      for d, s in zip(dims[1:], x.shape[1:])):
            raise DataError(f"data inputs of shape {tuple(x.shape[1:])} do not fit the model input "
                            f"{tuple(dims[1:])}",
                            "give data at the model's input resolution (or --input-shape)")
        xs.append(x)
        if y is not None and labelled:
            y = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
            ys.append(y[: len(x)])
        n += len(x)
        if max_samples is not None and n >= max_samples:
            break
    if not xs:
        raise DataError("the data loader yielded no samples")
    data = np.concatenate(xs).astype(np.float32, copy=False)
    labels = np.concatenate(ys) if ys and len(ys) == len(xs) else None
    fixed = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None
    # dynamic batch: up to 64 samples per run, fewer for large inputs (calibration keeps every
    # intermediate tensor of a run in memory)
    step = fixed or max(1, min(64, 2 ** 19 // max(1, int(np.prod(data.shape[1:])))))
    if not fixed and equal_batches:
        step = max(k for k in range(1, step + 1) if len(data) % k == 0)
    arrays = [data[i:i + step] for i in range(0, len(data), step)]
    if fixed and arrays and arrays[-1].shape[0] != fixed:
        arrays = arrays[:-1]
        if labels is not None:
            labels = labels[: fixed * len(arrays)]
    if not arrays:
        raise DataError(f"fewer samples than the model's fixed batch of {fixed}")
    return Batches(arrays, labels)


class _Reader:
    """An ONNX Runtime CalibrationDataReader over prepared batches."""

    def __init__(self, input_name: str, arrays: list[np.ndarray]):
        self.input_name, self.arrays, self.i = input_name, arrays, 0

    def get_next(self):
        if self.i >= len(self.arrays):
            return None
        self.i += 1
        return {self.input_name: self.arrays[self.i - 1]}

    def rewind(self):
        self.i = 0

    def __len__(self):
        return len(self.arrays)

    def set_range(self, start_index: int, end_index: int):
        self.arrays = self.arrays[start_index:end_index]
        self.i = 0


def _calibration_reader(input_name: str, arrays: list[np.ndarray]):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(_Reader, CalibrationDataReader):
        pass

    return Reader(input_name, arrays)


# ---- running and measuring -----------------------------------------------------------------


def session(path: str | Path, threads: int | None = None):
    from advisor.export import onnx_session

    return onnx_session(path, threads=threads)


def logits(path: str | Path, batches: Batches, threads: int | None = None) -> np.ndarray:
    sess = session(path, threads)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: a})[0] for a in batches.arrays])


def accuracy_points(out: np.ndarray, labels: np.ndarray) -> float:
    return float((out.argmax(1) == labels).mean() * 100.0)


def paired_latency(paths: list[Path], shape: tuple[int, ...], threads: int | None = None,
                   max_seconds: float = 3.0, rounds: int = 7, warmup: int = 3) -> list[float]:
    """p50 latency (ms) of each model, measured in interleaved rounds in this process."""
    sessions = [session(p, threads) for p in paths]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    feeds = [{s.get_inputs()[0].name: x} for s in sessions]
    for s, f in zip(sessions, feeds):
        for _ in range(warmup):
            s.run(None, f)
    t0 = time.perf_counter()
    sessions[0].run(None, feeds[0])
    one = max(time.perf_counter() - t0, 1e-5)
    per_round = max(1, min(20, int(max_seconds / (rounds * len(paths) * one))))
    times: list[list[float]] = [[] for _ in paths]
    for _ in range(rounds):
        for i, (s, f) in enumerate(zip(sessions, feeds)):
            for _ in range(per_round):
                t = time.perf_counter()
                s.run(None, f)
                times[i].append(time.perf_counter() - t)
    return [float(np.median(t) * 1e3) for t in times]


def threads_of(ctx: PassContext) -> int | None:
    return getattr(ctx.target, "threads", None) or None


def latency_shape(model: OnnxArtifact, dims: list[int | str]) -> tuple[int, ...]:
    shape = tuple(model.input_shape) if model.input_shape else tuple(d if isinstance(d, int) else 1
                                                                      for d in dims)
    return tuple(int(s) for s in shape)


def file_size(path: str | Path) -> int:
    return Path(path).stat().st_size


def work_dir(ctx: PassContext) -> Path:
    """The plan's work directory (a temporary one when the pass is called on its own)."""
    base = Path(ctx.workdir) if ctx.workdir else Path(tempfile.gettempdir()) / "advisor-passes"
    base.mkdir(parents=True, exist_ok=True)
    return base


def scratch_dir(ctx: PassContext, tag: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f".{tag}-", dir=work_dir(ctx)))


def output_path(ctx: PassContext, src: Path, tag: str) -> Path:
    """A new file in the work directory; never the input."""
    base = work_dir(ctx)
    out = base / f"{src.stem}.{tag}.onnx"
    i = 1
    while out.exists() or out.resolve() == src.resolve():
        out = base / f"{src.stem}.{tag}-{i}.onnx"
        i += 1
    return out


def eval_batches(ctx: PassContext, dims: list[int | str], max_samples: int | None,
                 calib: Batches | None = None) -> Batches | None:
    """Labelled validation batches if there is a val loader, else the calibration batches."""
    if ctx.val_loader is not None:
        return collect_batches(ctx.val_loader, max_samples, dims)
    return calib


# ---- int8 static ---------------------------------------------------------------------------


class StaticQuantizer:
    """quantize_static on one pre-processed model with one calibration (cached ranges), so that
    variants with different fp32 exclusions cost no re-calibration."""

    def __init__(self, src: Path, work: Path, config: Int8StaticConfig, types: dict[str, Any],
                 calib: Batches, input_name: str):
        self.work, self.config, self.types = work, config, types
        self.model = work / "preprocessed.onnx"
        self.pre_info = preprocess(src, self.model)
        self.cache = work / "calibration.json"
        self.calib, self.input_name = calib, input_name
        self.variants: dict[tuple[str, ...], Path] = {}

    def __call__(self, exclude: tuple[str, ...] | list[str]) -> Path:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

        key = tuple(sorted(set(exclude)))
        if key in self.variants:
            return self.variants[key]
        out = self.work / f"int8-{len(self.variants)}.onnx"
        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[self.config.calibration]
        extra: dict[str, Any] = {"ActivationSymmetric": bool(self.types["activation_symmetric"])}
        if self.config.calibration == "percentile":
            extra["CalibPercentile"] = float(self.config.percentile)
        # not "CalibMaxIntermediateOutputs": in onnxruntime 1.32 the MinMax calibrator drops the
        # collected outputs at that count without merging their ranges (calibrate.py)
        reader = None if self.cache.exists() else _calibration_reader(self.input_name,
                                                                      self.calib.arrays)
        with _quiet():
            quantize_static(str(self.model), str(out), reader, quant_format=QuantFormat.QDQ,
                            per_channel=self.config.per_channel,
                            reduce_range=self.types["reduce_range"],
                            activation_type=_quant_type(self.types["activation"]),
                            weight_type=_quant_type(self.types["weight"]),
                            nodes_to_exclude=list(key) or None, calibrate_method=method,
                            extra_options=extra, calibration_cache_path=str(self.cache))
        self.variants[key] = out
        return out


@register_pass("int8_static", Int8StaticConfig, family="quantization", stage="onnx",
               needs_calibration=True, devices=("cpu",))
def int8_static(model: OnnxArtifact, config: Int8StaticConfig, ctx: PassContext) -> PassResult:
    """Static int8 in ONNX Runtime (QDQ, per-channel, calibrated), with accuracy-aware fallback."""
    if config.num_samples < 1:
        raise PassError("int8_static: num_samples must be >= 1")
    if ctx.calib_loader is None:
        raise PassError("int8_static needs calibration data",
                        "pass --data (a few hundred unlabelled inputs are enough)")
    src = Path(model.path)
    input_name, dims = input_spec(src)
    types = choose_int8_types(ctx.target, config.activation_type, config.weight_type,
                              config.reduce_range)
    calib = collect_batches(ctx.calib_loader, config.num_samples, dims, labelled=False,
                            equal_batches=True)
    work = scratch_dir(ctx, "int8_static")
    try:
        quantize = StaticQuantizer(src, work, config, types, calib, input_name)
        fp32_graph = load_onnx(quantize.model)
        labels = layer_names(fp32_graph)
        excluded = resolve_nodes(fp32_graph, config.exclude_nodes)
        info: dict[str, Any] = {
            "format": "QDQ", "calibration": config.calibration, "samples": calib.count,
            "per_channel": config.per_channel, "activation_type": types["activation"],
            "weight_type": types["weight"], "reduce_range": types["reduce_range"],
            "activation_symmetric": types["activation_symmetric"], "types_reason": types["reason"],
            "arch": types["arch"], "vnni": types["vnni"], **quantize.pre_info}
        if config.calibration == "percentile":
            info["percentile"] = config.percentile
        shape = latency_shape(model, dims)
        threads = threads_of(ctx)
        evalb = eval_batches(ctx, dims, None, calib)
        if config.max_drop is not None:
            from advisor.passes.fallback import run_fallback

            if evalb is None or evalb.labels is None:
                raise PassError("int8_static: the accuracy-aware fallback (max_drop) needs "
                                "labelled validation data", "pass --val-data with labels")
            outcome = run_fallback(
                candidates=[n for n in quantizable_nodes(fp32_graph) if n not in excluded],
                labels=labels, quantize=quantize, fp32_path=quantize.model, eval_batches=evalb,
                reference_accuracy=_reference_accuracy(ctx, quantize.model, evalb, threads),
                max_drop=float(config.max_drop), base_excluded=tuple(excluded),
                sensitivity_samples=config.sensitivity_samples,
                max_reverted=config.max_reverted, latency_shape=shape, threads=threads)
            qpath = outcome.model_path
            excluded = list(outcome.excluded)
            info["fallback"] = outcome.to_json()
        else:
            qpath = quantize(tuple(excluded))
        out = output_path(ctx, src, "int8")
        shutil.copyfile(qpath, out)
        info.update(_describe(src, out, excluded, labels, evalb, threads, shape,
                              config.measure_speedup and config.max_drop is None))
        if config.max_drop is not None:
            fb = info["fallback"]
            info["speedup_vs_fp32"] = fb["final"]["speedup_vs_fp32"]
            info["latency_ms"] = {"fp32": fb["fp32"]["latency_ms"],
                                  "int8": fb["final"]["latency_ms"]}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return PassResult(OnnxArtifact(out, model.input_shape, {**model.info, "int8_static": info}), info)


def _reference_accuracy(ctx: PassContext, fp32_path: Path, batches: Batches,
                        threads: int | None) -> dict[str, Any]:
    """Accuracy the budget is measured against: the original model (teacher) if known, so that
    the budget holds for the whole plan, else the fp32 model this pass received."""
    import torch

    teacher = ctx.teacher
    if isinstance(teacher, torch.nn.Module):
        with torch.inference_mode():
            out = np.concatenate([teacher.eval()(torch.from_numpy(a)).float().numpy()
                                  for a in batches.arrays])
        return {"accuracy": accuracy_points(out, batches.labels), "source": "original model"}
    if isinstance(teacher, OnnxArtifact):
        out = logits(teacher.path, batches, threads)
        return {"accuracy": accuracy_points(out, batches.labels), "source": "original model"}
    return {"accuracy": accuracy_points(logits(fp32_path, batches, threads), batches.labels),
            "source": "fp32 input of this pass"}


def _describe(src: Path, out: Path, excluded: list[str], labels: dict[str, str],
              evalb: Batches | None, threads: int | None, shape: tuple[int, ...],
              measure: bool) -> dict[str, Any]:
    """Size, node types, fp32 layers, agreement with fp32 and (optionally) measured speed-up."""
    counts = op_counts(out)
    info: dict[str, Any] = {
        "size_bytes_before": file_size(src), "size_bytes_after": file_size(out),
        "size_ratio": round(file_size(out) / file_size(src), 4),
        "node_types": counts,
        "excluded_nodes": [{"node": n, "layer": labels.get(n, n)} for n in excluded]}
    if evalb is not None:
        ref, got = logits(src, evalb, threads), logits(out, evalb, threads)
        info["max_abs_diff"] = float(np.max(np.abs(ref - got)))
        info["top1_agreement"] = float((ref.argmax(1) == got.argmax(1)).mean())
        if evalb.labels is not None:
            info["accuracy_fp32"] = accuracy_points(ref, evalb.labels)
            info["accuracy"] = accuracy_points(got, evalb.labels)
    if measure:
        fp32_ms, q_ms = paired_latency([src, out], shape, threads)
        info["latency_ms"] = {"fp32": round(fp32_ms, 4), "quantized": round(q_ms, 4)}
        info["speedup_vs_fp32"] = round(fp32_ms / q_ms, 3)
        info["latency_shape"] = list(shape)
    return info


# ---- int8 dynamic --------------------------------------------------------------------------


@register_pass("int8_dynamic", Int8DynamicConfig, family="quantization", stage="onnx",
               devices=("cpu",))
def int8_dynamic(model: OnnxArtifact, config: Int8DynamicConfig, ctx: PassContext) -> PassResult:
    """Dynamic int8 in ONNX Runtime (for Linear/LSTM-heavy models); reports its measured speed."""
    from onnxruntime.quantization import quantize_dynamic

    src = Path(model.path)
    _, dims = input_spec(src)
    types = choose_int8_types(ctx.target, "auto", config.weight_type, config.reduce_range)
    work = scratch_dir(ctx, "int8_dynamic")
    try:
        pre = work / "preprocessed.onnx"
        pre_info = preprocess(src, pre)
        graph = load_onnx(pre)
        labels = layer_names(graph)
        excluded = resolve_nodes(graph, config.exclude_nodes)
        q = work / "int8-dynamic.onnx"
        with _quiet():
            quantize_dynamic(str(pre), str(q), weight_type=_quant_type(types["weight"]),
                             per_channel=config.per_channel, reduce_range=types["reduce_range"],
                             op_types_to_quantize=list(config.op_types) or None,
                             nodes_to_exclude=excluded or None)
        out = output_path(ctx, src, "int8dyn")
        shutil.copyfile(q, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    evalb = _optional_eval(ctx, dims)
    info: dict[str, Any] = {"weight_type": types["weight"], "activation_type": "uint8 (at run time)",
                            "reduce_range": types["reduce_range"], "per_channel": config.per_channel,
                            **pre_info,
                            **_describe(src, out, excluded, labels, evalb, threads_of(ctx),
                                        latency_shape(model, dims), config.measure_speedup)}
    counts = info["node_types"]
    info["conv_integer_nodes"] = counts.get("ConvInteger", 0)
    info["matmul_integer_nodes"] = counts.get("MatMulInteger", 0) + counts.get(
        "DynamicQuantizeMatMul", 0)
    speed = info.get("speedup_vs_fp32")
    if speed is not None and speed < 1.0:
        info["warning"] = (f"measured {1 / speed:.1f}x slower than fp32 on this host"
                           + (" (dynamic int8 convolutions have no fast kernel: use int8_static "
                              "for CNNs)" if info["conv_integer_nodes"] else ""))
    return PassResult(OnnxArtifact(out, model.input_shape, {**model.info, "int8_dynamic": info}), info)


def _optional_eval(ctx: PassContext, dims: list[int | str],
                   max_samples: int = 128) -> Batches | None:
    loader = ctx.val_loader if ctx.val_loader is not None else ctx.calib_loader
    if loader is None:
        return None
    return collect_batches(loader, max_samples, dims, labelled=ctx.val_loader is not None)


# ---- weight-only int8 ----------------------------------------------------------------------


def _weight_axis(node, rank: int) -> int | None:
    """Output-channel axis of the node's weight (input 1), or None for per-tensor."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    if node.op_type == "MatMul" and rank == 2:
        return 1
    return None


def weight_only_int8_model(model, config: WeightOnlyInt8Config, exclude: set[str]) -> list[dict]:
    """Replace weight initializers by int8 + scale and an expansion to float, in place (see
    `WeightOnlyInt8Config.expand`); returns what changed."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    per_axis_dq = opset >= 13
    inits = {i.name: i for i in model.graph.initializer}
    done: dict[str, dict] = {}
    new_nodes, changed = [], []
    for node in model.graph.node:
        if node.op_type not in config.op_types or node.name in exclude or len(node.input) < 2:
            continue
        wname = node.input[1]
        init = inits.get(wname)
        if wname in done:
            changed.append({**done[wname], "node": node.name})
            continue
        if init is None or init.data_type != TensorProto.FLOAT:
            continue
        w = numpy_helper.to_array(init).astype(np.float32)
        if w.size < config.min_elements:
            continue
        axis = _weight_axis(node, w.ndim) if config.per_channel else None
        if config.expand == "run" and not per_axis_dq:
            axis = None
        shape = [1] * w.ndim
        if axis is None:
            scale = np.array(max(float(np.abs(w).max()), 1e-12) / 127.0, np.float32)
        else:
            red = tuple(i for i in range(w.ndim) if i != axis)
            scale = (np.maximum(np.abs(w).max(axis=red), 1e-12) / 127.0).astype(np.float32)
            shape[axis] = -1
        full_scale = scale if axis is None else scale.reshape(shape)
        q = np.clip(np.round(w / full_scale), -127, 127).astype(np.int8)
        qname, sname = f"{wname}_int8", f"{wname}_scale"
        model.graph.initializer.remove(init)
        model.graph.initializer.append(numpy_helper.from_array(q, qname))
        if config.expand == "run":
            zname = f"{wname}_zero_point"
            model.graph.initializer.extend([
                numpy_helper.from_array(scale, sname),
                numpy_helper.from_array(np.zeros(scale.shape, np.int8), zname)])
            attrs = {"axis": axis} if axis is not None else {}
            new_nodes.append(helper.make_node("DequantizeLinear", [qname, sname, zname], [wname],
                                              name=f"{wname}_DequantizeLinear", **attrs))
        else:
            model.graph.initializer.append(numpy_helper.from_array(
                np.asarray(full_scale, np.float32), sname))
            new_nodes += [helper.make_node("Cast", [qname], [f"{wname}_int8_as_float"],
                                           name=f"{wname}_Cast", to=TensorProto.FLOAT),
                          helper.make_node("Mul", [f"{wname}_int8_as_float", sname], [wname],
                                           name=f"{wname}_Scale")]
        entry = {"weight": wname, "elements": int(w.size), "per_channel": axis is not None,
                 "max_abs_error": float(np.abs(w - q.astype(np.float32) * full_scale).max())}
        done[wname] = entry
        changed.append({**entry, "node": node.name})
    graph_inputs = [i for i in model.graph.input if i.name in done]
    for i in graph_inputs:
        model.graph.input.remove(i)
    nodes = new_nodes + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return changed


@register_pass("weight_only_int8", WeightOnlyInt8Config, family="quantization", stage="onnx",
               devices=("cpu", "cuda"))
def weight_only_int8(model: OnnxArtifact, config: WeightOnlyInt8Config,
                     ctx: PassContext) -> PassResult:
    """int8 weight storage (about 4x smaller file), fp32 compute: for size goals."""
    import onnx

    src = Path(model.path)
    _, dims = input_spec(src)
    proto = load_onnx(src)
    labels = layer_names(proto)
    exclude = set(resolve_nodes(proto, config.exclude_nodes))
    changed = weight_only_int8_model(proto, config, exclude)
    if not changed:
        raise PassError("weight_only_int8: no weight tensor large enough to store as int8",
                        f"min_elements is {config.min_elements}")
    out = output_path(ctx, src, "w8")
    onnx.save_model(proto, str(out))
    evalb = _optional_eval(ctx, dims)
    info = {"quantized_weights": len({c["weight"] for c in changed}),
            "layers": [labels.get(c["node"], c["node"]) for c in changed],
            "max_weight_error": max(c["max_abs_error"] for c in changed),
            "expand": config.expand,
            "compute": "fp32; int8 weights expanded once at session load (constant folding)"
                       if config.expand == "load" else
                       "fp32; int8 weights dequantized on every call (int8 in memory)",
            **_describe(src, out, sorted(exclude), labels, evalb, threads_of(ctx),
                        latency_shape(model, dims), config.measure_speedup)}
    return PassResult(OnnxArtifact(out, model.input_shape, {**model.info, "weight_only_int8": info}),
                      info)
