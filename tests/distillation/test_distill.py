"""The distill / distill_student passes: pairing, adapters, budgets, configs, effect."""
from __future__ import annotations

import copy

import pytest
import torch

from advisor.errors import PassError
from advisor.examples import digits, models
from advisor.passes.base import PassContext, RetrainBudget, get_pass
from advisor.passes.config import config_from_dict, config_to_dict
from advisor.passes.distill import DistillConfig, DistillStudentConfig
from advisor.passes.kd_features import classifier_name, feature_stages, resolve_feature_pairs
from advisor.passes.kd_students import build_student, width_reduced_copy

X = torch.zeros(2, 3, 32, 32)
SHAPE = (1, 3, 32, 32)


def _narrow(model, ratio=0.5):
    """A structurally pruned copy (fewer channels, same module names)."""
    ctx = PassContext(example_inputs=(torch.zeros(SHAPE),), input_shape=SHAPE)
    return width_reduced_copy(model, ctx, channel_ratio=ratio)[0]


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_passes_are_registered_with_their_needs():
    d, s = get_pass("distill"), get_pass("distill_student")
    assert d.family == s.family == "distillation"
    assert d.trains and s.trains and s.needs_full_retrain and not d.needs_full_retrain
    assert not d.needs_labels  # unlabelled data is enough for response KD


def test_auto_pairs_resnet_with_its_pruned_copy_by_name_with_adapters():
    teacher = models.resnet(width=16)
    pruned = _narrow(teacher)
    pairs = resolve_feature_pairs(teacher, pruned, X)
    assert [(p.teacher, p.student) for p in pairs] == \
        [("layers.0", "layers.0"), ("layers.1", "layers.1"), ("layers.2", "layers.2")]
    assert [p.teacher_shape for p in pairs] == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    assert [p.student_shape for p in pairs] == [(8, 32, 32), (16, 16, 16), (32, 8, 8)]
    assert all(p.needs_adapter for p in pairs)
    same = resolve_feature_pairs(teacher, copy.deepcopy(teacher), X)
    assert not any(p.needs_adapter for p in same)


def test_auto_pairs_across_architectures_by_stage_and_resolution():
    pairs = resolve_feature_pairs(models.vgg(), models.resnet(width=8), X)
    assert [(p.teacher, p.student) for p in pairs] == \
        [("features.5", "layers.0"), ("features.12", "layers.1"), ("features.19", "layers.2")]
    assert all(p.teacher_shape[1:] == p.student_shape[1:] for p in pairs)
    # vgg's extra 4x4 stage has no resnet counterpart; mobilenet's has one in vgg
    back = resolve_feature_pairs(models.mobilenet(), models.vgg(), X)
    assert [p.student for p in back] == ["features.5", "features.12", "features.19", "features.20"]
    assert feature_stages(models.mlp(), X) == [("net.4", (256,))]


def test_explicit_pairs_override_and_bad_names_are_errors():
    t, s = models.resnet(width=16), models.resnet(width=8)
    pairs = resolve_feature_pairs(t, s, X, (("layers.1.conv1", "layers.1"),))
    assert [(p.teacher, p.student, p.needs_adapter) for p in pairs] == \
        [("layers.1.conv1", "layers.1", True)]
    with pytest.raises(PassError, match="no student module"):
        resolve_feature_pairs(t, s, X, (("layers.1", "nope"),))


def test_embedding_is_the_last_linear_input():
    assert classifier_name(models.resnet(), X) == "fc"
    assert classifier_name(models.mlp(), X) == "net.5"


@pytest.mark.parametrize("config", [
    DistillConfig(),
    DistillConfig(kind="feature", feature_pairs=(("layers.0", "layers.0"), ("stem", "stem"))),
    DistillConfig(kind="relation", rkd_distance_weight=1.0, rkd_angle_weight=2.0),
    DistillConfig(kind="combined", temperature=2.0, alpha=0.5, hard_label_weight=0.25,
                  max_seconds=30.0, use_labels=False),
    DistillStudentConfig(),
    DistillStudentConfig(student_arch="advisor.examples.models:resnet",
                         student_kwargs={"width": 8, "blocks": [1, 1]}, kind="combined"),
    DistillStudentConfig(channel_ratio=0.5, init="inherit", feature_pairs=(("a", "b"),)),
])
def test_config_round_trips_through_json(config):
    import json
    data = json.loads(json.dumps(config_to_dict(config)))
    assert config_from_dict(type(config), data) == config


@pytest.mark.parametrize("name,config", [("distill", DistillConfig()),
                                         ("distill_student", DistillStudentConfig())])
def test_no_retraining_budget_is_refused(name, config, make_ctx):
    model = models.resnet(width=8)
    with pytest.raises(PassError, match="needs a retraining budget"):
        get_pass(name).apply(model, config, make_ctx(teacher=model, budget="none"))


def test_student_from_scratch_needs_full_budget_and_distill_needs_a_teacher(make_ctx):
    model = models.resnet(width=8)
    with pytest.raises(PassError, match="full retraining"):
        get_pass("distill_student").apply(model, DistillStudentConfig(), make_ctx(model))
    with pytest.raises(PassError, match="teacher"):
        get_pass("distill").apply(model, DistillConfig(), make_ctx(None))
    with pytest.raises(PassError, match="without labels"):
        get_pass("distill").apply(model, DistillConfig(kind="feature", use_labels=False),
                                  make_ctx(model))


def test_feature_kd_builds_adapters_and_leaves_inputs_untouched(tiny_teacher, make_ctx):
    pruned = _narrow(tiny_teacher)
    before_student, before_teacher = _state(pruned), _state(tiny_teacher)
    ctx = make_ctx(tiny_teacher)
    result = get_pass("distill").apply(pruned, DistillConfig(kind="combined", epochs=1), ctx)
    info = result.info
    assert [p["adapter"] for p in info["feature_pairs"]] == \
        ["conv1x1 4->8", "conv1x1 8->16", "conv1x1 16->32"]
    assert info["adapter_params"] == 4 * 8 + 8 * 16 + 16 * 32
    assert info["embedding_layers"] == {"teacher": "fc", "student": "fc"}
    assert info["train"]["epochs_run"] == 1
    assert result.model is not pruned
    assert _same_state(_state(pruned), before_student)  # the caller's model is unchanged
    assert _same_state(_state(tiny_teacher), before_teacher)
    assert not _same_state(_state(result.model), before_student)
    # the distilled model is a plain model again: no hooks left behind
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in result.model.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in tiny_teacher.modules())


def _agreement(a, b, x):
    with torch.no_grad():
        return (a(x).argmax(1) == b(x).argmax(1)).float().mean().item()


def test_unlabelled_response_kd_improves_agreement_with_the_teacher(tiny_teacher, make_ctx,
                                                                    small_splits):
    tr = small_splits["train"]
    unlabelled = digits.loader(digits.Split(tr.inputs[:384], torch.full((384,), -1)), 32,
                               shuffle=True)
    student = copy.deepcopy(tiny_teacher)
    torch.manual_seed(3)
    student.fc.reset_parameters()  # features intact, classifier lost
    x_val = small_splits["val"].inputs[:256]
    before = _agreement(tiny_teacher, student, x_val)
    ctx = make_ctx(tiny_teacher, train_loader=unlabelled, val_loader=None)
    result = get_pass("distill").apply(
        student, DistillConfig(kind="response", use_labels=False, epochs=3, lr=5e-3), ctx)
    after = _agreement(tiny_teacher, result.model, x_val)
    assert result.info["labels"].startswith("ignored")
    assert result.info["weights"]["hard_label"] == 0.0
    assert after > before + 0.4 and after > 0.75, (before, after)


def test_width_reduced_student_is_a_quarter_of_the_flops_and_from_scratch(tiny_teacher,
                                                                          make_ctx):
    ctx = make_ctx(tiny_teacher, budget="full")
    student, info = build_student(tiny_teacher, DistillStudentConfig(flops_fraction=0.25), ctx)
    assert 0.15 < info["flops_fraction"] <= 0.25  # the smallest ratio reaching the target
    assert info["params"] < info["teacher_params"] / 2
    assert student.stem[0].out_channels < tiny_teacher.stem[0].out_channels
    # from scratch: the kept filters are not the teacher's
    t_w, s_w = tiny_teacher.stem[0].weight, student.stem[0].weight
    assert not any(torch.allclose(s_w[i], t_w[j]) for i in range(len(s_w))
                   for j in range(len(t_w)))
    inherit, info = build_student(tiny_teacher, DistillStudentConfig(init="inherit",
                                                                      channel_ratio=0.5), ctx)
    assert info["channel_ratio"] == 0.5
    assert any(torch.allclose(inherit.stem[0].weight[0], t_w[j]) for j in range(len(t_w)))


def test_distill_student_trains_a_named_architecture(tiny_teacher, make_ctx):
    config = DistillStudentConfig(student_arch="advisor.examples.models:resnet",
                                  student_kwargs={"width": 4}, kind="combined", epochs=1)
    result = get_pass("distill_student").apply(tiny_teacher, config,
                                               make_ctx(tiny_teacher, budget="full"))
    assert result.info["student"]["source"] == "advisor.examples.models:resnet"
    assert result.info["student"]["flops_fraction"] < 0.5
    assert result.model.stem[0].out_channels == 4
    assert all(p["adapter"] for p in result.info["feature_pairs"])
    with pytest.raises(PassError, match="cannot import"):
        get_pass("distill_student").apply(
            tiny_teacher, DistillStudentConfig(student_arch="no_such_pkg.mod:f"),
            make_ctx(tiny_teacher, budget="full"))


def test_budget_caps_the_epochs(tiny_teacher, make_ctx):
    ctx = make_ctx(tiny_teacher)
    ctx.budget = RetrainBudget("finetune", epochs=1)
    result = get_pass("distill").apply(models.resnet(width=4), DistillConfig(epochs=5), ctx)
    assert result.info["train"]["epochs_run"] == 1


def _embeddings(model, x):
    captured = {}
    handle = model.fc.register_forward_pre_hook(lambda m, a: captured.setdefault("e", a[0]))
    with torch.no_grad():
        model.eval()(x)
    handle.remove()
    return captured["e"]


def test_relation_kd_brings_the_students_batch_geometry_closer(tiny_teacher, make_ctx,
                                                               small_splits):
    from advisor.passes.kd_losses import rkd_angle_loss, rkd_distance_loss

    student = _narrow(tiny_teacher, 0.5)
    x = small_splits["val"].inputs[:64]
    t_e = _embeddings(tiny_teacher, x)

    def rkd(model):
        s_e = _embeddings(model, x)
        return rkd_distance_loss(s_e, t_e).item() + rkd_angle_loss(s_e, t_e).item()
    ctx = make_ctx(tiny_teacher, val_loader=None,
                   train_loader=digits.loader(small_splits["train"], 32, shuffle=True))
    result = get_pass("distill").apply(student, DistillConfig(kind="relation", epochs=2,
                                                              lr=5e-3), ctx)
    assert result.info["weights"]["hard_label"] == 1.0  # no response term: full CE
    before, after = rkd(student), rkd(result.model)
    assert after < 0.7 * before, (before, after)


class _Body(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv2(torch.relu(self.conv1(x))).mean((2, 3))


class _Monolithic(torch.nn.Module):
    """Feature maps only inside one custom module that returns a pooled vector."""

    def __init__(self):
        super().__init__()
        self.body = _Body()
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(self.body(x))


def test_feature_points_inside_a_monolithic_module_are_found():
    assert feature_stages(_Monolithic(), X) == [("body.conv1", (8, 32, 32)),
                                                ("body.conv2", (16, 16, 16))]
    pairs = resolve_feature_pairs(models.resnet(width=8), _Monolithic(), X)
    assert [(p.teacher, p.student) for p in pairs] == [("layers.0", "body.conv1"),
                                                        ("layers.1", "body.conv2")]
