"""Turn an ONNX model back into a trainable torch module with real layers, where it can be.

A deployment engineer is often handed only `model.onnx`. Structured pruning, factorization,
fine-tuning and distillation need layers, so each ONNX node becomes the torch equivalent: `Conv`
an `nn.Conv2d`, `BatchNormalization` an `nn.BatchNorm2d`, `Gemm` (and `MatMul` + bias `Add` on
a constant matrix) an `nn.Linear`, named after their weights' initializers (exporters name them
by module path, `layer1.0.conv1.weight`); the rest become torch functions in one `fx` graph.
Shape arithmetic (`Shape` → `Gather` → `Concat` chains that exporters write for a dynamic batch)
is evaluated once by ONNX Runtime at the model's input shape, and a `Reshape` to the resulting
sizes follows the batch and the channels as in `advisor.lift`.

Written here rather than with onnx2torch: that library imports torchvision at import time (its
NMS and RoIAlign converters), which does not load beside the CPU torch advisor installs, and its
`Reshape` keeps the exported sizes as constants, so a pruned model would no longer run. Nodes
outside the supported set are not guessed at: the first one that stops the conversion is named
in one line, and the model keeps its post-training candidates. The converted module must
reproduce ONNX Runtime's outputs on the file (1e-4 relative) or it is not used.
"""
from __future__ import annotations

import operator
from pathlib import Path

import numpy as np
import torch
from torch import fx, nn
from torch.nn import functional as F

from advisor.lift import LiftResult
from advisor.lift_layers import load_tensors
from advisor.lift_shapes import following_shape, reshape_following

__all__ = ["lift_onnx", "ONNX_LIFT_VERSION"]

ONNX_LIFT_VERSION = 1
TOLERANCE = 1e-4

_ELEMENTWISE = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div}
def identity(x: torch.Tensor) -> torch.Tensor:
    """ONNX Identity and inference-time Dropout (a module-level function: the converted graph
    module is pickled into trial workers, and a lambda cannot be)."""
    return x


_UNARY = {"Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh,
          "Identity": identity, "Dropout": identity, "HardSwish": F.hardswish,
          "Neg": torch.neg, "Sqrt": torch.sqrt, "Exp": torch.exp, "Erf": torch.erf}
# ops whose outputs are shape arithmetic when all their inputs are: evaluated once, by ORT
_SHAPE_OPS = {"Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Cast", "Add", "Sub",
              "Mul", "Div", "Constant", "ConstantOfShape", "Range", "Reshape", "Equal", "Where",
              "ReduceProd", "Identity", "Size"}


def lift_onnx(path: Path, input_shape: tuple[int, ...]) -> LiftResult:
    """The ONNX model at `path` as a torch module with real layers, or the reason it cannot be."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in inits]
    if len(inputs) != 1 or len(graph.output) != 1:
        return LiftResult(None, "only models with one input and one output are converted")
    static = _static_names(graph, inits)
    wanted = sorted({n for node in graph.node for n in node.input if n in static and n not in inits}
                    | {node.input[0] for node in graph.node
                       if node.op_type in ("Reshape", "Flatten") and node.input[0] not in static})
    example = np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)
    values = _run_for(model, wanted, inputs[0], example)
    b = _Builder(inits, values, static)
    x = b.graph.placeholder("input")
    b.env[inputs[0]] = x
    for node in graph.node:
        if all(o in static for o in node.output):
            continue  # shape arithmetic: its values are known
        why = b.add(node)
        if why:
            return LiftResult(None, f"the ONNX node {node.name or node.op_type} ({node.op_type}) "
                                    f"cannot be turned into torch: {why}")
    b.graph.output(b.env[graph.output[0].name])
    module = fx.GraphModule(b.root, b.graph, class_name="LiftedOnnx")
    module.eval()
    mismatch = _check(module, path, example)
    if mismatch:
        return LiftResult(None, mismatch)
    return LiftResult(module, layers=b.layers, reshapes=b.reshapes, source="the ONNX graph")


def _static_names(graph, inits: dict) -> set[str]:
    """Tensors whose values do not depend on the input's values (only on its shape)."""
    static = set(inits)
    for node in graph.node:
        if node.op_type == "Shape" or (node.op_type in _SHAPE_OPS and node.input and
                                       all(i in static or i == "" for i in node.input)):
            static.update(node.output)
        elif node.op_type == "Constant":
            static.update(node.output)
    return static


def _run_for(model, names: list[str], input_name: str, example: np.ndarray) -> dict:
    """The values of `names` (intermediate tensors) at `example`, from one ONNX Runtime run."""
    import onnx
    import onnxruntime as ort

    if not names:
        return {}
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(n))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = sess.run(names, {input_name: example})
    return dict(zip(names, outs))


class _Builder:
    """Adds ONNX nodes to one fx graph: layers as submodules, the rest as torch calls."""

    def __init__(self, inits: dict, values: dict, static: set):
        self.inits, self.values, self.static = inits, values, static
        self.graph, self.root, self.env = fx.Graph(), nn.Module(), {}
        self.layers = {"convolutions": 0, "linear layers": 0, "batch norms": 0}
        self.reshapes = 0
        self._consts = 0

    # -- values -----------------------------------------------------------------------------
    def const(self, name: str):
        if name in self.inits:
            return self.inits[name]
        return self.values.get(name)

    def arg(self, name: str):
        """An fx node for a tensor input: dynamic, or a constant made a buffer."""
        if name in self.env:
            return self.env[name]
        value = self.const(name)
        if value is None:
            raise KeyError(name)
        self._consts += 1
        attr = f"const_{self._consts}"
        self.root.register_buffer(attr, torch.from_numpy(np.array(value)))
        self.env[name] = self.graph.get_attr(attr)
        return self.env[name]

    def call(self, fn, *args, **kwargs):
        return self.graph.call_function(fn, args, kwargs)

    def layer(self, weight_name: str, module: nn.Module, kind: str, x):
        name = _module_name(weight_name, self.root)
        self.root.add_module(name, module)
        self.layers[kind] += 1
        return self.graph.call_module(name, (x,))

    # -- nodes ------------------------------------------------------------------------------
    def add(self, node) -> str:
        a = {at.name: _attr(at) for at in node.attribute}
        op, ins, out = node.op_type, list(node.input), node.output
        try:
            result = self._convert(op, ins, a, node)
        except KeyError as e:
            return f"its input {e.args[0]} is neither computed nor a constant"
        if isinstance(result, str):
            return result
        if isinstance(result, tuple):
            for name, value in zip(out, result):
                self.env[name] = value
        else:
            self.env[out[0]] = result
        return ""

    def _convert(self, op, ins, a, node):  # noqa: C901 - one branch per ONNX op
        if op == "Conv":
            return self._conv(ins, a)
        if op == "BatchNormalization":
            return self._batch_norm(ins, a)
        if op == "Gemm":
            return self._gemm(ins, a)
        if op == "MatMul" and ins[1] in self.inits and self.inits[ins[1]].ndim == 2:
            w = self.inits[ins[1]]
            lin = nn.Linear(w.shape[0], w.shape[1], bias=False)
            _load(lin, weight=w.T)
            return self.layer(ins[1], lin, "linear layers", self.arg(ins[0]))
        if op in _UNARY:
            return self.call(_UNARY[op], self.arg(ins[0]))
        if op in _ELEMENTWISE:
            return self.call(_ELEMENTWISE[op], self.arg(ins[0]), self.arg(ins[1]))
        if op == "LeakyRelu":
            return self.call(F.leaky_relu, self.arg(ins[0]), a.get("alpha", 0.01))
        if op == "HardSigmoid":
            return self.call(hard_sigmoid, self.arg(ins[0]), a.get("alpha", 0.2),
                             a.get("beta", 0.5))
        if op == "Clip":
            lo = self._scalar(ins, 1, a.get("min"))
            hi = self._scalar(ins, 2, a.get("max"))
            return self.call(torch.clamp, self.arg(ins[0]), lo, hi)
        if op in ("MaxPool", "AveragePool"):
            return self._pool(op, ins, a)
        if op == "GlobalAveragePool":
            return self.call(F.adaptive_avg_pool2d, self.arg(ins[0]), 1)
        if op == "GlobalMaxPool":
            return self.call(F.adaptive_max_pool2d, self.arg(ins[0]), 1)
        if op == "ReduceMean":
            axes = a.get("axes") if len(ins) < 2 or not ins[1] else self.const(ins[1])
            if axes is None:
                return "no axes given"
            return self.call(torch.mean, self.arg(ins[0]), [int(v) for v in np.ravel(axes)],
                             keepdim=bool(a.get("keepdims", 1)))
        if op == "Reshape":
            return self._reshape(ins)
        if op == "Flatten":
            return self.call(torch.flatten, self.arg(ins[0]), int(a.get("axis", 1)))
        if op == "Transpose":
            return self.call(torch.permute, self.arg(ins[0]), list(a["perm"]))
        if op == "Concat":
            return self.call(torch.cat, [self.arg(i) for i in ins], int(a["axis"]))
        if op == "Split":
            sizes = a.get("split") if len(ins) < 2 or not ins[1] else self.const(ins[1])
            if sizes is None:
                return "split sizes not given"
            parts = self.call(torch.split, self.arg(ins[0]), [int(v) for v in np.ravel(sizes)],
                              int(a.get("axis", 0)))
            return tuple(self.call(operator.getitem, parts, i) for i in range(len(node.output)))
        if op == "Softmax":
            return self.call(torch.softmax, self.arg(ins[0]), int(a.get("axis", -1)))
        if op in ("Squeeze", "Unsqueeze"):
            axes = a.get("axes") if len(ins) < 2 or not ins[1] else self.const(ins[1])
            fn = torch.squeeze if op == "Squeeze" else torch.unsqueeze
            if axes is None or len(np.ravel(axes)) != 1:
                return "only one axis is converted"
            return self.call(fn, self.arg(ins[0]), int(np.ravel(axes)[0]))
        return "this op is not converted"

    def _scalar(self, ins, i, default):
        if len(ins) > i and ins[i]:
            v = self.const(ins[i])
            if v is None:
                raise KeyError(ins[i])
            return float(np.ravel(v)[0])
        return default

    def _conv(self, ins, a):
        w = self.inits.get(ins[1])
        if w is None or w.ndim != 4:
            return "only 2-D convolutions with constant weights are converted"
        if a.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
            return "auto_pad is not converted"
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if pads[:2] != pads[2:]:
            return "asymmetric padding is not converted"
        bias = self.inits.get(ins[2]) if len(ins) > 2 and ins[2] else None
        groups = int(a.get("group", 1))
        conv = nn.Conv2d(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]),
                         stride=tuple(a.get("strides", [1, 1])), padding=tuple(pads[:2]),
                         dilation=tuple(a.get("dilations", [1, 1])), groups=groups,
                         bias=bias is not None)
        _load(conv, weight=w, bias=bias)
        return self.layer(ins[1], conv, "convolutions", self.arg(ins[0]))

    def _batch_norm(self, ins, a):
        scale, bias, mean, var = (self.inits.get(n) for n in ins[1:5])
        if any(v is None for v in (scale, bias, mean, var)):
            return "only batch norms with constant statistics are converted"
        bn = nn.BatchNorm2d(mean.shape[0], eps=float(a.get("epsilon", 1e-5)),
                            momentum=1.0 - float(a.get("momentum", 0.9)))
        _load(bn, weight=scale, bias=bias, running_mean=mean, running_var=var)
        return self.layer(ins[1], bn, "batch norms", self.arg(ins[0]))

    def _gemm(self, ins, a):
        w = self.inits.get(ins[1])
        bias = self.inits.get(ins[2]) if len(ins) > 2 and ins[2] else None
        if w is None or a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or \
                a.get("beta", 1.0) != 1.0 or (len(ins) > 2 and ins[2] and bias is None):
            return "only x·Wᵀ + b with constant W and b is converted"
        w = w if a.get("transB", 0) else w.T
        lin = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
        _load(lin, weight=w, bias=None if bias is None else np.broadcast_to(bias, (w.shape[0],)))
        return self.layer(ins[1], lin, "linear layers", self.arg(ins[0]))

    def _pool(self, op, ins, a):
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if pads[:2] != pads[2:] or a.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
            return "asymmetric or automatic padding is not converted"
        k, s = list(a["kernel_shape"]), list(a.get("strides", [1, 1]))
        ceil = bool(a.get("ceil_mode", 0))
        if op == "MaxPool":
            return self.call(F.max_pool2d, self.arg(ins[0]), k, s, pads[:2],
                             list(a.get("dilations", [1, 1])), ceil)
        return self.call(F.avg_pool2d, self.arg(ins[0]), k, s, pads[:2], ceil,
                         bool(a.get("count_include_pad", 0)))

    def _reshape(self, ins):
        shape = self.const(ins[1])
        source = self.values.get(ins[0])
        if shape is None or source is None:
            return "its target shape is not known"
        spec = following_shape(list(source.shape), [int(v) for v in shape])
        self.reshapes += 1
        return self.call(reshape_following, self.arg(ins[0]), spec)


def hard_sigmoid(x, alpha: float, beta: float):
    return torch.clamp(alpha * x + beta, 0.0, 1.0)


def _attr(at):
    import onnx

    value = onnx.helper.get_attribute_value(at)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, onnx.TensorProto):
        return onnx.numpy_helper.to_array(value)
    return value


def _load(module: nn.Module, **arrays) -> None:
    """ONNX initializers (numpy) into the layer, through the lifting's own copy."""
    load_tensors(module, **{k: None if v is None else torch.from_numpy(
        np.array(v, dtype=np.float32)) for k, v in arrays.items()})


def _module_name(weight_name: str, root: nn.Module) -> str:
    """A submodule name from the weight's initializer name (`layer1.0.conv1.weight` →
    `layer1_0_conv1`: a flat attribute; dots would need containers)."""
    base = weight_name[:-len(".weight")] if weight_name.endswith(".weight") else weight_name
    base = "".join(c if c.isalnum() or c == "_" else "_" for c in base).strip("_") or "layer"
    if base[0].isdigit():
        base = "m_" + base
    name, i = base, 1
    while hasattr(root, name):
        i += 1
        name = f"{base}_{i}"
    return name


def _check(module: nn.Module, path: Path, example: np.ndarray) -> str:
    """'' when the module reproduces ONNX Runtime's outputs on the file and runs at another
    batch size; else the reason."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: example})[0]
    x = torch.from_numpy(example)
    try:
        with torch.no_grad():
            out = module(x).numpy()
            module(torch.cat([x, x]))
    except Exception as e:
        return f"the converted module does not run: {type(e).__name__}: {str(e).splitlines()[0]}"
    if out.shape != ref.shape:
        return f"the converted module's output is {out.shape}, ONNX Runtime's {ref.shape}"
    err = float(np.abs(out - ref).max() / max(float(np.abs(ref).max()), 1e-12))
    if err > TOLERANCE:
        return f"the converted module computes different outputs than the ONNX model ({err:.1e})"
    return ""
