"""What the agent requires of an uploaded model before ONNX Runtime sees it: an ONNX ModelProto
with a graph, and no tensor whose data lives in an external file.

Why by hand: the device has only onnxruntime and numpy (no `onnx` package), and ONNX Runtime
resolves external data relative to the model's directory, which would let a model read other
files. The protobuf wire format is walked over the few messages that can hold tensors (graphs,
nodes' attributes, sparse tensors, functions, training info), skipping everything else by its
length, so a large model costs one pass over its bytes. External data is refused outright:
the host always exports single-file ONNX.
"""
from __future__ import annotations

from pathlib import Path

# message schemas: field number -> the message type it holds (only fields that can lead to a
# TensorProto are listed; the rest are skipped)
_SCHEMA: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse",
                  23: "sparse"},
    "function": {7: "node"},
    "training": {1: "graph", 2: "graph"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {},
}
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 13, 14
_MAX_DEPTH = 64


class ModelRefused(Exception):
    """The file is not a model the agent will run; the message says why."""


def check_onnx(path: str | Path) -> None:
    data = memoryview(Path(path).read_bytes())
    fields = {f for f, _, _ in _fields(data, 0, len(data))}
    if 7 not in fields or 1 not in fields:  # graph, ir_version
        raise ModelRefused("the file is not an ONNX model (no graph or IR version)")
    _walk(data, 0, len(data), "model", 0)


def _walk(data: memoryview, start: int, end: int, kind: str, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise ModelRefused("the ONNX model nests graphs too deeply")
    schema = _SCHEMA[kind]
    for field, wire, value in _fields(data, start, end):
        if kind == "tensor":
            if field == _TENSOR_DATA_LOCATION and wire == 0 and value == 1 or \
                    field == _TENSOR_EXTERNAL_DATA:
                raise ModelRefused("the ONNX model keeps tensors in external data files; the "
                                   "agent runs single-file models only")
            continue
        sub = schema.get(field)
        if sub is not None and wire == 2:
            _walk(data, value[0], value[1], sub, depth + 1)


def _fields(data: memoryview, start: int, end: int):
    """(field number, wire type, value) for each field of the message in data[start:end]:
    an int for varints, (begin, end) for length-delimited fields, None for fixed widths."""
    i = start
    while i < end:
        key, i = _varint(data, i, end)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i, end)
            yield field, wire, value
        elif wire == 2:
            n, i = _varint(data, i, end)
            if i + n > end:
                raise ModelRefused("the ONNX file is truncated or not protobuf")
            yield field, wire, (i, i + n)
            i += n
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
            yield field, wire, None
        else:
            raise ModelRefused("the file is not an ONNX model (not protobuf)")
    if i != end:
        raise ModelRefused("the ONNX file is truncated or not protobuf")


def _varint(data: memoryview, i: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= end or shift > 63:
            raise ModelRefused("the ONNX file is truncated or not protobuf")
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7
