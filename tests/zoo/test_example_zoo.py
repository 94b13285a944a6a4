"""`advisor example --zoo`: torchvision architectures trained on digits, loadable with --arch."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("torchvision", reason="example --zoo needs torchvision: scripts/install.sh vision")

pytestmark = pytest.mark.zoo


def test_zoo_example_records_its_factory_and_kwargs(tmp_path):
    from advisor.examples.zoo import write_zoo_examples
    from advisor.model_io import load_model

    (ex,) = write_zoo_examples(tmp_path, names=("tv-resnet18",), epochs=1, progress=False)
    assert ex.test_accuracy > 0.2  # chance is 0.1: one epoch on digits learns something (0.45 seen)
    loaded = load_model(str(tmp_path / "tv-resnet18.pt2"), arch="torchvision.models:resnet18")
    assert loaded.editable and loaded.metadata["arch_kwargs"] == {"num_classes": 10}
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(loaded.module(x), ex.model(x), atol=1e-5)
    for split in ("train", "val", "test"):
        assert (tmp_path / f"digits-{split}.pt").is_file()
