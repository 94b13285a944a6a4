"""FLOPs (multiply-adds) equal the analytical count for conv/linear-only models."""
from __future__ import annotations

from torch import nn

from advisor.measure.flops import FLOPS_CONVENTION, count_flops, count_onnx_flops


def _conv_linear_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),                 # 0: 32x32 out
        nn.Conv2d(8, 16, 3, stride=2, padding=1),      # 1: 16x16 out
        nn.Conv2d(16, 16, 3, padding=1, groups=4),     # 2: grouped, 16x16 out
        nn.Conv2d(16, 4, 1),                           # 3: pointwise
        nn.Flatten(),
        nn.Linear(4 * 16 * 16, 32),                    # 5
        nn.Linear(32, 10, bias=False),                 # 6
    ).eval()


# MACs = output elements x multiply-adds per output element
EXPECTED = {
    "0": 8 * 32 * 32 * (3 * 3 * 3),
    "1": 16 * 16 * 16 * (8 * 3 * 3),
    "2": 16 * 16 * 16 * (16 // 4 * 3 * 3),
    "3": 4 * 16 * 16 * 16,
    "5": 32 * 4 * 16 * 16,
    "6": 10 * 32,
}


def test_conv_linear_flops_match_the_analytical_count():
    model = _conv_linear_net()
    report = count_flops(model, (1, 3, 32, 32))
    assert report.total == sum(EXPECTED.values())
    assert {k: report.by_module[k] for k in EXPECTED} == EXPECTED
    assert report.params == sum(p.numel() for p in model.parameters())
    assert report.by_module_params["5"] == 4 * 16 * 16 * 32 + 32
    assert "multiply-add" in report.convention and report.convention == FLOPS_CONVENTION


def test_flops_scale_with_batch_and_leave_the_model_alone():
    model = _conv_linear_net().train()
    one = count_flops(model, (1, 3, 32, 32)).total
    assert count_flops(model, (3, 3, 32, 32)).total == 3 * one
    assert model.training  # mode restored


def test_onnx_flops_match_the_analytical_count(tmp_path):
    from advisor.export import export_onnx

    model = _conv_linear_net()
    path = export_onnx(model, tmp_path / "m.onnx", (1, 3, 32, 32))["path"]
    report = count_onnx_flops(path, (1, 3, 32, 32))
    assert report.total == sum(EXPECTED.values())
    assert report.params == sum(p.numel() for p in model.parameters())
    assert set(report.by_operator) <= {"Conv", "Gemm", "MatMul"}


def test_unsupported_ops_are_silent(capfd):
    import logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler(level=logging.DEBUG)
    handler.emit = records.append
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2)).eval()
        report = count_flops(model, (1, 3, 10, 10))
    finally:
        root.removeHandler(handler)
    assert report.total == 4 * 8 * 8 * 27  # max_pool2d and relu skipped, not counted
    out, err = capfd.readouterr()
    logged = " ".join(r.getMessage() for r in records if r.levelno >= logging.WARNING)
    assert "unsupported" not in (out + err + logged).lower()
