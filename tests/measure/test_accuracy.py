"""Accuracy and agreement for torch modules and ONNX models, on real data (digits)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from advisor.errors import DataError
from advisor.measure.accuracy import accuracy, agreement


@pytest.fixture(scope="module")
def digits_net(digits_loaders):
    """A small CNN trained briefly on digits (well above chance, well under a second). One
    thread: on a shared 2-core machine two OpenMP threads wait on each other at every op."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                            nn.Linear(8 * 16 * 16, 10))
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        for _ in range(2):
            for x, y in digits_loaders["train"]:
                opt.zero_grad()
                nn.functional.cross_entropy(net(x), y).backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval()


@pytest.fixture(scope="module")
def digits_onnx(digits_net, tmp_path_factory):
    from advisor.export import export_onnx

    return export_onnx(digits_net, tmp_path_factory.mktemp("acc") / "digits.onnx",
                       (1, 3, 32, 32))["path"]


def test_onnx_accuracy_equals_torch(digits_net, digits_onnx, digits_loaders):
    from advisor.export import onnx_session

    path = digits_onnx
    acc_torch = accuracy(digits_net, digits_loaders["test"])
    acc_onnx = accuracy(path, digits_loaders["test"])
    assert acc_torch > 0.8  # trained: the comparison is not between two constant predictors
    n = len(digits_loaders["test"].dataset)
    assert abs(acc_onnx - acc_torch) <= 1 / n  # at most one near-tie may flip
    assert accuracy(onnx_session(path), digits_loaders["test"]) == acc_onnx


def test_agreement(digits_net, digits_onnx, digits_loaders):
    import copy

    path = digits_onnx
    same = agreement(digits_net, digits_net, digits_loaders["val"])
    assert same == {"top1_agreement": 1.0, "max_abs_diff": 0.0}
    onnx = agreement(digits_net, path, digits_loaders["val"])
    assert onnx["top1_agreement"] >= 0.99 and onnx["max_abs_diff"] < 1e-3
    damaged = copy.deepcopy(digits_net)
    with torch.no_grad():
        damaged[-1].weight.mul_(-1.0)
        damaged[-1].bias.mul_(-1.0)
    worse = agreement(digits_net, damaged, next(iter(digits_loaders["val"]))[0])
    assert worse["top1_agreement"] < 0.5 and worse["max_abs_diff"] > 0.1


def test_accuracy_needs_labels(digits_net):
    with pytest.raises(DataError, match="labelled"):
        accuracy(digits_net, [torch.randn(4, 3, 32, 32)])
