"""Lifting a plain torch.export program into real layers (advisor.lift)."""
from __future__ import annotations

import pickle

import onnxruntime as ort
import pytest
import torch
from torch import nn

from advisor.lift import following_shape, lift_program
from advisor.model_io import load_model


class ShuffleNetLike(nn.Module):
    """Conv/BN/ReLU, a depthwise residual, a channel shuffle by views, a flatten into a linear."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        y = torch.relu(self.bn(self.c(x)))
        y = y + self.dw(y)
        y = nn.functional.adaptive_avg_pool2d(y, 4)
        b, c, h, w = y.shape
        y = y.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, -1, h, w)
        return self.fc(y.view(b, -1))


def _export(model, shape=(1, 3, 16, 16)):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    return torch.export.export(model.eval(), (x,)), x


@pytest.mark.parametrize("source,shape,spec", [
    ([1, 8, 4, 4], [1, 2, 4, 4, 4], ["batch", 2, -1, 4, 4]),  # shuffle: channels per group
    ([1, 2, 4, 4, 4], [1, 8, 4, 4], ["batch", -1, 4, 4]),  # and back
    ([1, 512, 1, 1], [1, 512], ["batch", -1]),  # flatten before a classifier
    ([1, 8, 4, 4], [1, 8, 16], ["batch", -1, 16]),  # spatial flatten: channels, not H·W
    ([1, 8, 4, 4], [1, 128], ["batch", -1]),  # C·H·W
    ([1, 8, 4, 4], [1, -1, 4, 4], ["batch", -1, 4, 4]),  # -1 already there
    ([1, 64, 1, 1], [-1, 64], ["batch", -1]),  # an exporter's flatten: the batch inferred
    ([40], [1, 40, 1, 1], [1, -1, 1, 1]),  # a per-channel scale shaped to broadcast
    ([1, 8, 7, 8, 7, 96], [-1, 49, 96], [-1, 49, 96]),  # windows: the batch folded into -1
])
def test_fixed_shapes_follow_batch_and_channels(source, shape, spec):
    assert following_shape(source, shape) == spec


def test_lifted_module_has_layers_equal_outputs_and_trains():
    model = ShuffleNetLike()
    ep, x = _export(model)
    res = lift_program(ep, x)
    m = res.module
    assert m is not None, res.reason
    assert res.layers == {"convolutions": 2, "linear layers": 1, "batch norms": 1,
                          "layer norms": 0}
    assert res.reshapes == 3
    assert isinstance(m.c, nn.Conv2d) and m.dw.groups == 8 and isinstance(m.bn, nn.BatchNorm2d)
    with torch.no_grad():
        torch.testing.assert_close(m(x), model(x), rtol=1e-5, atol=1e-5)
    m.train()
    before = m.bn.running_mean.clone()
    m(torch.randn(4, 3, 16, 16)).sum().backward()  # another batch size: views follow it
    assert m.c.weight.grad is not None and not torch.equal(before, m.bn.running_mean)
    # trials get the model pickled into a worker
    m.eval()
    again = pickle.loads(pickle.dumps(m))
    with torch.no_grad():
        torch.testing.assert_close(again(x), m(x))


class Branchy(nn.Module):
    """Data-dependent control flow (torch.cond)."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.c(x)
        return torch.cond(y.sum() > 0, lambda t: t.sin(), lambda t: t.cos(), (y,))


def test_lifting_refuses_control_flow_with_the_reason():
    ep, x = _export(Branchy())
    res = lift_program(ep, x)
    assert res.module is None and "control flow" in res.reason


def test_lifting_refuses_a_custom_op_naming_it():
    @torch.library.custom_op("advisortest::twice", mutates_args=())
    def twice(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    twice.register_fake(lambda x: torch.empty_like(x))

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return twice(self.c(x))

    ep, x = _export(Custom())
    res = lift_program(ep, x)
    assert res.module is None and "advisortest::twice" in res.reason


def test_a_graph_that_cannot_be_lifted_says_why_in_the_rules(tmp_path):
    from advisor.decide.engine import evaluate_rules
    from advisor.decide.factors import Factors
    from advisor.decide.situation import PassFlags, Situation

    ep, _ = _export(Branchy())
    f = tmp_path / "branchy.pt2"
    torch.export.save(ep, f)
    # (the scan refuses this program's nested graphs by their names; the file is ours)
    loaded = load_model(str(f), trust_pickle=True)
    assert not loaded.editable and "control flow" in loaded.metadata["lift_refused"]
    s = Situation(factors=Factors(retrain="finetune"), device="cpu", editable=False,
                  lift_refused=loaded.metadata["lift_refused"], has_train_data=True,
                  passes={"prune_structured": PassFlags("prune_structured", "pruning")})
    texts = [r.text for r in evaluate_rules(s) if r.rule == "structured_pruning_for_latency"]
    assert texts and "could not be lifted into layers (the graph has control flow" in texts[0]


@pytest.mark.parametrize("name", ["resnet", "mobilenet", "vgg"])
def test_structured_pruning_on_a_lifted_example(name, tmp_path):
    """Ratio 0 changes nothing; 50% of the channels cuts the FLOPs; the result exports to one
    ONNX file that runs in a plain onnxruntime session."""
    from fvcore.nn import FlopCountAnalysis

    from advisor.examples.models import FACTORIES
    from advisor.export import export_onnx
    from advisor.passes.base import PassContext, get_pass, load_builtin_passes
    from advisor.passes.config import config_from_dict

    load_builtin_passes()
    spec = get_pass("prune_structured")
    shape = (1, 3, 32, 32)
    model = FACTORIES[name]().eval()
    ep, x = _export(model, shape)

    def prune(ratio):
        lifted = lift_program(ep, x).module
        return lifted, spec.apply(lifted, config_from_dict(spec.config_cls, {"ratio": ratio}),
                                  PassContext.for_shape(shape)).model.eval()

    def flops(m):
        return FlopCountAnalysis(m, torch.zeros(shape)).unsupported_ops_warnings(False) \
            .uncalled_modules_warnings(False).total()

    _, same = prune(0.0)
    lifted, half = prune(0.5)
    with torch.no_grad():
        torch.testing.assert_close(same(x), model(x), rtol=1e-5, atol=1e-5)
    assert flops(half) < 0.45 * flops(lifted)
    onnx_file = tmp_path / "half.onnx"
    export_onnx(half, onnx_file, shape)
    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        assert out.shape == (1, 10) and abs(out - half(x).numpy()).max() < 1e-3


def test_plan_made_on_a_lifted_model_records_it_and_apply_refuses_another(tmp_path):
    from advisor.decide.plan import Plan, Step
    from advisor.errors import PlanError
    from advisor.examples.models import FACTORIES
    from advisor.model_common import arch_record
    from advisor.replay import apply_plan

    ep, _ = _export(FACTORIES["vgg"](), (1, 3, 32, 32))
    f = tmp_path / "vgg.pt2"
    torch.export.save(ep, f)
    loaded = load_model(str(f))
    assert arch_record(loaded) == {"lifted": 1}
    plan = Plan("int8", [Step("int8_static", {})], model={"lifted": 1})
    with pytest.raises(PlanError, match="lifted from its exported graph"):
        apply_plan(str(f), plan, out=tmp_path / "out", arch="advisor.examples.models:vgg")


def test_lifted_layers_keep_the_original_module_paths():
    """The module hierarchy is rebuilt (torch.export.unflatten): every layer sits at the path it
    had in the eager model, so blocks and distillation stages are found by name."""
    from advisor.examples.models import FACTORIES

    model = FACTORIES["resnet"]().eval()
    ep, x = _export(model, (1, 3, 32, 32))
    lifted = lift_program(ep, x).module

    def named(m, kind):
        return {n for n, layer in m.named_modules() if isinstance(layer, kind)}

    for kind in (nn.Conv2d, nn.BatchNorm2d, nn.Linear):
        assert named(lifted, kind) == named(model, kind)


def test_without_unflatten_the_flat_graph_is_lifted(monkeypatch):
    """Where the hierarchy cannot be rebuilt, the flat graph's layer calls still become layers,
    named by their weights' paths."""
    def fail(ep):
        raise RuntimeError("not this graph")

    model = ShuffleNetLike()
    ep, x = _export(model)
    monkeypatch.setattr(torch.export, "unflatten", fail)
    res = lift_program(ep, x)
    assert res.module is not None and type(res.module.c) is nn.Conv2d
    with torch.no_grad():
        torch.testing.assert_close(res.module(x), model(x), rtol=1e-5, atol=1e-5)


def test_apply_replays_a_plan_on_the_lifted_file(tmp_path):
    """A plan made on a lifted .pt2 (model.lifted) replays on the same file: the lifting is
    repeated and the structured step prunes the same layers."""
    from advisor.decide.plan import Plan, Step
    from advisor.examples.models import FACTORIES
    from advisor.replay import apply_plan

    ep, x = _export(FACTORIES["vgg"](), (1, 3, 32, 32))
    f = tmp_path / "vgg.pt2"
    torch.export.save(ep, f)
    plan = Plan("prune", [Step("prune_structured", {"ratio": 0.3})], model={"lifted": 1})
    res = apply_plan(str(f), plan, out=tmp_path / "out", progress=False,
                     measure={"warmup": 1, "repeats": 3, "max_seconds": 0.5})
    sess = ort.InferenceSession(str(res.files["onnx"]), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert out.shape == (1, 10)
    assert res.files["onnx"].stat().st_size < 0.7 * (tmp_path / "vgg.pt2").stat().st_size
