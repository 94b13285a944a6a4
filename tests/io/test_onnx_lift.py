"""An ONNX model turned back into a torch module with real layers (advisor.onnx_lift)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from advisor.onnx_lift import lift_onnx

SHAPE = (1, 3, 32, 32)


def _ort(path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("name", ["resnet", "mobilenet", "vgg"])
def test_an_exported_example_converts_prunes_and_exports_again(name, tmp_path):
    from advisor.examples.models import FACTORIES
    from advisor.export import export_onnx
    from advisor.passes.base import PassContext, get_pass, load_builtin_passes
    from advisor.passes.config import config_from_dict

    model = FACTORIES[name]().eval()
    path = tmp_path / f"{name}.onnx"
    export_onnx(model, path, SHAPE)
    res = lift_onnx(path, SHAPE)
    assert res.module is not None, res.reason
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert res.layers["convolutions"] == convs and res.layers["linear layers"] == 1
    x = np.random.default_rng(1).standard_normal((2, *SHAPE[1:])).astype(np.float32)
    with torch.no_grad():
        got = res.module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, _ort(path, x), rtol=1e-4, atol=1e-4)  # and at batch 2
    import pickle  # trials get the model pickled into a worker

    with torch.no_grad():
        again = pickle.loads(pickle.dumps(res.module))(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(again, got)
    load_builtin_passes()
    spec = get_pass("prune_structured")
    pruned = spec.apply(res.module, config_from_dict(spec.config_cls, {"ratio": 0.5}),
                        PassContext.for_shape(SHAPE)).model.eval()
    assert sum(p.numel() for p in pruned.parameters()) < \
        0.5 * sum(p.numel() for p in model.parameters())
    out = tmp_path / "pruned.onnx"
    export_onnx(pruned, out, SHAPE)
    with torch.no_grad():
        np.testing.assert_allclose(_ort(out, x[:1]), pruned(torch.from_numpy(x[:1])).numpy(),
                                   rtol=1e-3, atol=1e-4)


def test_shape_arithmetic_is_evaluated_and_the_reshape_follows_the_batch(tmp_path):
    """A flatten written as Shape → Gather → Unsqueeze → Concat → Reshape (how exporters write
    x.view(x.size(0), -1) for a dynamic batch)."""
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    fc = np.random.default_rng(1).standard_normal((5, 4 * 30 * 30)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Shape", ["r"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["b"], axis=0),
        helper.make_node("Unsqueeze", ["b", "axes"], ["b1"]),
        helper.make_node("Concat", ["b1", "minus_one"], ["shape"], axis=0),
        helper.make_node("Reshape", ["r", "shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc", "fcb"], ["y"], transB=1),
    ]
    inits = [onnx.numpy_helper.from_array(w, "conv.weight"),
             onnx.numpy_helper.from_array(fc, "fc"),
             onnx.numpy_helper.from_array(np.zeros(5, np.float32), "fcb"),
             onnx.numpy_helper.from_array(np.array(0, np.int64), "zero"),
             onnx.numpy_helper.from_array(np.array([0], np.int64), "axes"),
             onnx.numpy_helper.from_array(np.array([-1], np.int64), "minus_one")]
    for n in nodes:
        n.input[:] = ["conv.weight" if i == "w" else i for i in n.input]
    g = helper.make_graph(nodes, "flat", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5])], inits)
    path = tmp_path / "flat.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    res = lift_onnx(path, SHAPE)
    assert res.module is not None, res.reason
    assert res.reshapes == 1 and isinstance(res.module.conv, nn.Conv2d)
    x = np.random.default_rng(2).standard_normal((3, *SHAPE[1:])).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(res.module(torch.from_numpy(x)).numpy(), _ort(path, x),
                                   rtol=1e-4, atol=1e-4)


def test_an_unconverted_op_is_named_in_one_line(tmp_path):
    w = np.ones((4, 3, 1, 1), np.float32)
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]),
         helper.make_node("LRN", ["c"], ["y"], size=3)], "lrn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [onnx.numpy_helper.from_array(w, "w")])
    path = tmp_path / "lrn.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    res = lift_onnx(path, (1, 3, 8, 8))
    assert res.module is None and "(LRN)" in res.reason and "\n" not in res.reason
    from advisor.model_io import load_model

    loaded = load_model(str(path))  # the file still loads, for the post-training passes
    assert loaded.module is None and not loaded.editable and "(LRN)" in loaded.metadata[
        "lift_refused"]


def test_a_lifted_onnx_input_keeps_its_file_as_the_baseline(tmp_path):
    from advisor.examples.models import FACTORIES
    from advisor.export import export_onnx
    from advisor.measure.profile_runtime import export_artefact
    from advisor.model_io import load_model

    path = tmp_path / "vgg.onnx"
    export_onnx(FACTORIES["vgg"]().eval(), path, SHAPE)
    loaded = load_model(str(path))
    assert loaded.editable and loaded.metadata["lifted"] == 1
    entry, artefact = export_artefact(loaded, "onnxruntime", tmp_path / "work")
    assert entry["status"] == "ok" and artefact == path
    assert export_artefact(loaded, "torch", tmp_path / "work")[0]["status"] == "skipped"
