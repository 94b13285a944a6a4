"""ONNX helpers shared by the ONNX-stage passes (int8 in ONNX Runtime, fp16/bf16), so that no
technique module imports another (as Olive keeps `olive/passes/onnx/common.py` apart from its
passes).

- the model: `load_onnx`, `input_spec`, `layer_names` (node -> `layers.0.conv1`), `resolve_nodes`,
  `op_counts`, `file_size`;
- data: `Batches` / `collect_batches` (model-ready float32 chunks and labels), `take_batches`,
  `eval_batches` / `optional_eval`;
- running: `session`, `logits`, `accuracy_points`, `paired_latency` (interleaved, in this
  process, through `advisor.measure.timer`);
- files: `work_dir`, `scratch_dir`, `output_path` (a new file, never the input);
- `describe`: size, node types, fp32 layers, agreement with fp32 and measured speed-up of a
  quantized artefact; `quiet` (from `advisor.quiet`): silence ONNX Runtime's quantization tools.
"""
from __future__ import annotations

import functools
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from advisor.errors import DataError, PassError
from advisor.measure.accuracy import logits_agreement, top1_accuracy
from advisor.measure.timer import probe_seconds, time_interleaved
from advisor.passes.base import OnnxArtifact, PassContext
from advisor.quiet import quiet  # noqa: F401 - re-exported for the ONNX passes


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


def op_counts(path: str | Path) -> dict[str, int]:
    return dict(Counter(n.op_type for n in load_onnx(path).graph.node))


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


def take_batches(batches: Batches, n: int) -> Batches:
    """The first whole batches (a fixed-batch model cannot take a partial one) holding at least
    `n` samples, or all of them, with their labels."""
    out, got = [], 0
    for a in batches.arrays:
        if got >= n:
            break
        out.append(a)
        got += len(a)
    labels = batches.labels[: got] if batches.labels is not None else None
    return Batches(out, labels)


def session(path: str | Path, threads: int | None = None):
    from advisor.export import onnx_session

    return onnx_session(path, threads=threads)


def logits(path: str | Path, batches: Batches, threads: int | None = None,
           target=None) -> np.ndarray:
    """Outputs on every batch: on the target's device when it has one (`on_host`), else here."""
    if not on_host(target):
        from advisor.device.remote import remote_predictor
        predict = remote_predictor(target.link, path, threads)
        return np.concatenate([predict(a) for a in batches.arrays])
    sess = session(path, threads)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: a})[0] for a in batches.arrays])


def accuracy_points(out: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in points (percent): `advisor.measure.accuracy.top1_accuracy` x 100."""
    return top1_accuracy(out, labels) * 100.0


def paired_latency(paths: list[Path], shape: tuple[int, ...], threads: int | None = None,
                   max_seconds: float = 3.0, rounds: int = 7, warmup: int = 3,
                   target=None) -> list[float]:
    """p50 latency (ms) of each model, measured in interleaved rounds in this process
    (`advisor.measure.timer.time_interleaved`): `warmup` calls each, then `rounds` rounds of one
    block per model, the blocks sized so that all rounds take about `max_seconds` (1-20 calls).
    On a target's device (two models): one paired run there (`measure.latency.measure_speedup`,
    alternating blocks in one process, as here), its two p50s."""
    if not on_host(target):
        from advisor.measure.latency import measure_speedup
        a, b = paths
        paired = measure_speedup(b, a, "onnxruntime", shape, target=target, threads=threads,
                                 warmup=warmup, max_seconds=max(0.2, max_seconds))
        return [float(paired.reference_p50), float(paired.p50)]
    sessions = [session(p, threads) for p in paths]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    runs = [functools.partial(s.run, None, {s.get_inputs()[0].name: x}) for s in sessions]
    for run in runs:
        for _ in range(warmup):
            run()
    one = max(probe_seconds(runs[:1]), 1e-5)
    per_round = max(1, min(20, int(max_seconds / (rounds * len(paths) * one))))
    return [float(m) for m in time_interleaved(runs, rounds, per_round).medians]


def on_host(target) -> bool:
    """Whether the target is measured on this host; else on its device, through its agent, so
    that a pass's own timings and accuracies (the fp32 fallback's choices, the figures in its
    info) are the device's, not this host's."""
    return getattr(target, "link", None) is None


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


def optional_eval(ctx: PassContext, dims: list[int | str],
                   max_samples: int = 128) -> Batches | None:
    loader = ctx.val_loader if ctx.val_loader is not None else ctx.calib_loader
    if loader is None:
        return None
    return collect_batches(loader, max_samples, dims, labelled=ctx.val_loader is not None)


def describe(src: Path, out: Path, excluded: list[str], labels: dict[str, str],
             evalb: Batches | None, threads: int | None, shape: tuple[int, ...],
             measure: bool, target=None) -> dict[str, Any]:
    """Size, node types, fp32 layers, agreement with fp32 and (optionally) measured speed-up
    (on the target's device when it has one)."""
    counts = op_counts(out)
    info: dict[str, Any] = {
        "size_bytes_before": file_size(src), "size_bytes_after": file_size(out),
        "size_ratio": round(file_size(out) / file_size(src), 4),
        "node_types": counts,
        "excluded_nodes": [{"node": n, "layer": labels.get(n, n)} for n in excluded]}
    if evalb is not None:
        ref, got = logits(src, evalb, threads, target), logits(out, evalb, threads, target)
        agree = logits_agreement(ref, got)
        info["max_abs_diff"] = agree["max_abs_diff"]
        info["top1_agreement"] = agree["top1_agreement"]
        if evalb.labels is not None:
            info["accuracy_fp32"] = accuracy_points(ref, evalb.labels)
            info["accuracy"] = accuracy_points(got, evalb.labels)
    if measure:
        fp32_ms, q_ms = paired_latency([src, out], shape, threads, target=target)
        info["latency_ms"] = {"fp32": round(fp32_ms, 4), "quantized": round(q_ms, 4)}
        info["speedup_vs_fp32"] = round(fp32_ms / q_ms, 3)
        info["latency_shape"] = list(shape)
    return info
