"""int8 weight storage in an ONNX graph (the `weight_only_int8` pass's rewrite): each large
weight becomes int8 + a per-channel scale, expanded back to float either once when the session
loads (`Cast * scale`, constant-folded) or on every call (`DequantizeLinear`).
"""
from __future__ import annotations

from typing import Any

import numpy as np


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


def weight_only_int8_model(model, config: Any, exclude: set[str]) -> list[dict]:
    """Replace weight initializers by int8 + scale and an expansion to float, in place (see
    `WeightOnlyInt8Config.expand`); returns what changed. `config`: a `WeightOnlyInt8Config`
    (op_types, min_elements, per_channel, expand are read)."""
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
