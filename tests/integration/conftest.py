import pytest
import torch


@pytest.fixture(scope="session")
def example_dir(tmp_path_factory, trained_example, digits_splits):
    """A trained resnet.pt2 (with arch metadata) and digits splits as the CLI expects them."""
    from advisor.examples.build import INPUT_SHAPE
    from advisor.export import save_pt2

    d = tmp_path_factory.mktemp("example")
    model, ex = trained_example("resnet", epochs=4)
    save_pt2(model, d / "resnet.pt2", INPUT_SHAPE,
             {"arch": ex.arch, "arch_kwargs": ex.arch_kwargs, "num_classes": 10})
    for name, split in digits_splits.items():
        torch.save({"inputs": split.inputs, "labels": split.labels}, d / f"digits-{name}.pt")
    return d
