"""Hot spots of an ONNX model from ONNX Runtime's profiler, each row named by the PyTorch module
the nodes came from (`layers.0.conv1`), so that a baseline and a compressed ONNX artefact list
the same layers as the torch hooks do.

ONNX Runtime profiles the graph *after* its own optimisations, so the profiled names are not the
file's node names: fused and layout-transformed nodes are named after an output tensor
(`getitem_6_nchwc`), after the node plus a token (`node_Conv_145_token_25`), or duplicated
(`relu_DequantizeLinear/duplicated`). Each is traced back to a node of the file, and the node to
its module, best first:

1. a weight-bearing node (Conv, Gemm, MatMul and their int8 forms) is named by its weight's
   initializer (`layers.0.conv1.weight`, or `..._quantized` through a DequantizeLinear): the
   torch.onnx exporter names initializers after parameters, and this survives the BatchNorm
   fusion (whose fused Conv carries the BatchNorm's scope) and ONNX Runtime's quantization;
2. otherwise the module scope the dynamo exporter records in the node's metadata
   (`pkg.torch.onnx.name_scopes`, else `namespace`); nodes with a conv/linear kernel found under
   an activation's name (a fused Conv+ReLU) walk up to the Conv they started from;
3. the QuantizeLinear/DequantizeLinear nodes `quantize_static` inserts (they carry no metadata)
   are charged to the layer whose tensor they convert (`(input)` for the graph input);
4. a node that lost its metadata but kept its name (or its origin's name as a prefix, as the
   quantizers' `node_linear_MatMul_quant`) borrows that node's module, in the file itself or in
   a `reference` (the fp32 file a quantized one came from).

Nodes ONNX Runtime inserts itself (layout Transposes, `ReorderOutput`) become one
`(runtime-inserted ops)` row. A file without any module information (not from torch.onnx) keeps
ONNX Runtime's node names (`method` `onnxruntime-nodes` instead of `onnxruntime-modules`).
"""
from __future__ import annotations

import ast
import bisect
import re
from pathlib import Path

from advisor.measure.hotspot_types import Hotspots, LayerTime, _finish, _median, op_kind

__all__ = ["onnx_hotspots", "node_modules", "ProfiledNames", "RUNTIME_INSERTED"]

RUNTIME_INSERTED = "(runtime-inserted ops)"
_OVERHEAD = "(runtime overhead)"
_INPUT = "(input)"
_QDQ = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
# ops through which a weight reaches its consumer unchanged in meaning
_WEIGHT_PATH = {"DequantizeLinear", "Transpose", "Cast", "Identity", "Reshape"}
_WEIGHT_SUFFIXES = ("_quantized", "_dequantizelinear_output", "_transposed", "_fp16")
# suffixes ONNX Runtime's graph transformers add to the names of the nodes they create
_ORT_SUFFIX = re.compile(r"(/duplicated|_token_\d+|_nchwc|_quant|_output_\d+|_fused)$")
_UPSTREAM_STEPS = 4


def _parameter_module(name: str) -> str | None:
    """`layers.0.conv1` from `layers.0.conv1.weight` (or its quantized / transposed forms)."""
    changed = True
    while changed:
        changed = False
        for s in _WEIGHT_SUFFIXES:
            if name.lower().endswith(s):
                name, changed = name[: -len(s)], True
    for s in (".weight", ".bias"):
        if name.endswith(s) and len(name) > len(s):
            return name[: -len(s)]
    return None


def _scope_module(node) -> str | None:
    """The innermost module scope the exporter recorded for `node` ('' = the root: None)."""
    meta = {p.key: p.value for p in node.metadata_props}
    scopes = meta.get("pkg.torch.onnx.name_scopes")
    if scopes:
        try:
            parts = [str(p) for p in ast.literal_eval(scopes)]
        except (ValueError, SyntaxError):
            parts = [p.strip(" '\"") for p in scopes.strip("[]").split(",")]
        # the last entry is the FX node (`relu_1`), the ones before it are module paths
        return next((p for p in reversed(parts[:-1]) if p), None)
    namespace = meta.get("namespace")
    if namespace:
        parts = [p.split(":", 1)[0].strip() for p in namespace.split("/")[:-1]]
        return next((p for p in reversed(parts) if p), None)
    return None


class _Graph:
    def __init__(self, model):
        g = model.graph
        self.nodes = {n.name: n for n in g.node if n.name}
        self.producer = {o: n for n in g.node for o in n.output if o}
        self.inits = {i.name for i in g.initializer} | \
            {o for n in g.node if n.op_type == "Constant" for o in n.output}
        self.inputs = {i.name for i in g.input} - self.inits

    def weight_module(self, node) -> str | None:
        for name in node.input[1:]:
            for _ in range(_UPSTREAM_STEPS):
                if not name or name in self.inits:
                    break
                prod = self.producer.get(name)
                if prod is None or prod.op_type not in _WEIGHT_PATH or not prod.input:
                    name = None
                    break
                name = prod.input[0]
            if name and name in self.inits:
                module = _parameter_module(name)
                if module:
                    return module
        return None


def node_modules(model, reference=None) -> dict[str, str | None]:
    """ONNX node name -> the module it came from (see the module docstring); None if unknown.

    `reference`: an fp32 `onnx.ModelProto` the model was derived from (names kept, metadata
    perhaps lost), consulted for nodes that carry no module information of their own."""
    graph = _Graph(model)
    ref = node_modules(reference) if reference is not None else {}
    out: dict[str, str | None] = {}

    def module_of(node, depth: int = 0) -> str | None:
        if node.name in out:
            return out[node.name]
        if node.op_type in _QDQ:
            found = _qdq_module(node, depth)
        else:
            found = graph.weight_module(node) or _scope_module(node) or ref.get(node.name)
        if node.name:
            out[node.name] = found
        return found

    def _qdq_module(node, depth: int) -> str | None:
        src = node.input[0] if node.input else ""
        if src in graph.inits:
            return _parameter_module(src)
        if src in graph.inputs:
            return _INPUT
        prod = graph.producer.get(src)
        if prod is None or depth > 64:
            return ref.get(node.name)
        return module_of(prod, depth + 1)

    for node in model.graph.node:
        module_of(node)
    _by_name_prefix(out, ref)
    return out


def _by_name_prefix(out: dict[str, str | None], ref: dict[str, str | None]) -> None:
    """Nodes a quantizer added without metadata keep their origin's name as a prefix
    (`node_linear_MatMul_quant_scales_mul` from `node_linear`): borrow that node's module."""
    known = sorted(((n, m) for table in (ref, out) for n, m in table.items() if m),
                   key=lambda nm: len(nm[0]), reverse=True)
    for name in [n for n, m in out.items() if not m]:
        out[name] = next((m for n, m in known if name.startswith(n + "_")), None)


class ProfiledNames:
    """Maps the node names in ONNX Runtime's profile back to modules of `model`."""

    def __init__(self, model, reference=None):
        self.graph = _Graph(model)
        self.modules = node_modules(model, reference)
        self.named = any(m for m in self.modules.values())
        self._by_length = sorted(self.graph.nodes, key=len, reverse=True)

    def module(self, profiled: str, op_type: str) -> str | None:
        """The module of the profiled node `profiled` (an ORT op type `op_type`); None when it
        traces back to no node of the file (ONNX Runtime created it)."""
        node = self._node(profiled)
        if node is None:
            return None
        kind = op_kind(op_type) if op_type else "other"
        if kind != "other":
            node = self._upstream_of_kind(node, kind)
        return self.modules.get(node.name)

    def _node(self, profiled: str):
        names = [profiled]
        while True:
            shorter = _ORT_SUFFIX.sub("", names[-1])
            if shorter == names[-1] or not shorter:
                break
            names.append(shorter)
        for table in (self.graph.nodes, self.graph.producer):
            for n in names:
                if n in table:
                    return table[n]
        return next((self.graph.nodes[n] for n in self._by_length
                     if profiled.startswith(n + "_") or profiled.startswith(n + "/")), None)

    def _upstream_of_kind(self, node, kind: str):
        """A conv/linear kernel profiled under an activation's or an Add's name (ORT fused them
        into the kernel): the first node of that kind up the data path."""
        here = node
        for _ in range(_UPSTREAM_STEPS):
            if op_kind(here.op_type) == kind:
                return here
            prod = self.graph.producer.get(here.input[0]) if here.input else None
            if prod is None:
                break
            here = prod
        return node


def onnx_hotspots(path: str | Path, input_shape: tuple[int, ...], *, threads: int | None = None,
                  runs: int = 7, warmup: int = 2, provider: str = "CPUExecutionProvider",
                  reference: str | Path | None = None, target=None) -> Hotspots:
    """Per-module kernel times of an ONNX model from ONNX Runtime's profiler (module docstring);
    `reference`: the fp32 ONNX file a quantized `path` was made from, for names its nodes lost."""
    import onnx

    per_run, ops, overhead, n = _profile_nodes(path, input_shape, threads, runs, warmup, provider,
                                               target)
    names = ProfiledNames(onnx.load(str(path), load_external_data=False),
                          onnx.load(str(reference), load_external_data=False)
                          if reference else None)
    groups: dict[str, list[str]] = {}
    for node in ops:
        label = node
        if names.named:
            label = names.module(node, ops[node]) or RUNTIME_INSERTED
        groups.setdefault(label, []).append(node)
    rows = []
    for label, members in groups.items():
        ms = {m: _median([r.get(m, 0.0) for r in per_run]) / 1e3 for m in members}
        total = _median([sum(r.get(m, 0.0) for m in members) for r in per_run]) / 1e3
        rows.append(LayerTime(label, _group_kind(ms, ops), ops[max(ms, key=ms.get)], total, 0.0))
    if overhead > 0:
        rows.append(LayerTime(_OVERHEAD, "other", "session", overhead, 0.0))
    notes = [] if names.named else ["the ONNX file records no module names: rows are ONNX "
                                    "Runtime's node names"]
    return _finish("onnxruntime-modules" if names.named else "onnxruntime-nodes", rows,
                   sum(r.ms for r in rows), n, threads=threads,
                   batch_size=int(input_shape[0]), notes=notes)


def _group_kind(ms: dict[str, float], ops: dict[str, str]) -> str:
    """conv/linear when the group holds such a kernel (the one with the most time), else other."""
    by_kind: dict[str, float] = {}
    for node, t in ms.items():
        by_kind[op_kind(ops[node])] = by_kind.get(op_kind(ops[node]), 0.0) + t
    compute = {k: t for k, t in by_kind.items() if k != "other"}
    return max(compute, key=compute.get) if compute else "other"


def _profile_nodes(path, input_shape, threads, runs: int, warmup: int, provider: str,
                   target=None):
    """Per run {profiled node: us}, {profiled node: ORT op type}, the median session overhead
    (ms) and the number of runs. On a target with a device link the profiler runs there."""
    if getattr(target, "link", None) is not None:
        from advisor.device.remote import remote_profile_events
        events = remote_profile_events(target.link, path, input_shape, threads, runs, warmup,
                                       provider)
    else:
        from advisor.measure.ort_profile import profile_events
        events = profile_events(path, input_shape, threads, runs, warmup, provider)
    model_runs = sorted(((e["ts"], e["ts"] + e["dur"]) for e in events
                         if e.get("cat") == "Session" and e.get("name") == "model_run"))
    if len(model_runs) < warmup + runs:
        raise RuntimeError("ONNX Runtime's profile misses model_run events")
    model_runs = model_runs[warmup:]
    starts = [a for a, _ in model_runs]
    per_run: list[dict[str, float]] = [{} for _ in model_runs]
    ops: dict[str, str] = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        i = bisect.bisect_right(starts, e["ts"]) - 1
        if i < 0 or e["ts"] > model_runs[i][1]:
            continue  # a warm-up run
        name = e["name"][: -len("_kernel_time")]
        ops[name] = e.get("op_name", "")
        per_run[i][name] = per_run[i].get(name, 0.0) + e["dur"]
    overhead = _median([max(0.0, (b - a) - sum(r.values()))
                        for (a, b), r in zip(model_runs, per_run)]) / 1e3
    return per_run, ops, overhead, len(per_run)
