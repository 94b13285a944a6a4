"""`advisor example --zoo`: torchvision architectures trained on digits, for the vision environment.

The digits examples are advisor's own small networks; users bring torchvision and timm models. These
are torchvision's ResNet-18 and MobileNetV2 built with `num_classes=10` and trained on the same
digits splits (32×32), so the accuracy-aware paths — int8 with fp32 fallback, prune and fine-tune,
distillation — run on real architectures with real accuracy. Their `.pt2` records the factory and
its keyword arguments; since torchvision is not on the built-in allowlist, loading them as editable
modules takes `--arch torchvision.models:NAME` (the recorded `num_classes` is then used).
Needs torchvision (`scripts/install.sh vision`).
"""
from __future__ import annotations

from pathlib import Path

from advisor.errors import AdvisorError
from advisor.examples.build import TrainedExample, save_example, train_on_digits, write_splits

# file stem: (factory, kwargs, epochs, lr); measured here on 2 cores (see the README for figures)
ZOO_EXAMPLES = {
    "tv-resnet18": ("torchvision.models:resnet18", {"num_classes": 10}, 5, 3e-3),
    "tv-mobilenet_v2": ("torchvision.models:mobilenet_v2", {"num_classes": 10}, 6, 3e-3),
}


def require_torchvision() -> None:
    try:
        import torchvision  # noqa: F401
    except Exception as e:  # ImportError, or the "torchvision::nms does not exist" RuntimeError
        raise AdvisorError(f"advisor example --zoo needs torchvision, which does not load here "
                           f"({type(e).__name__})", "build the vision environment with "
                           "scripts/install.sh vision and run .venv-vision/bin/advisor") from None


def write_zoo_examples(out_dir: str | Path, names: tuple[str, ...] = tuple(ZOO_EXAMPLES),
                       epochs: int | None = None, progress: bool = True
                       ) -> list[TrainedExample]:
    """Train the torchvision examples and write `<stem>.pt2` plus the digits splits."""
    require_torchvision()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = write_splits(out)
    results = []
    for stem in names:
        arch, kwargs, default_epochs, lr = ZOO_EXAMPLES[stem]
        ex = train_on_digits(stem, arch, kwargs, epochs or default_epochs, lr, splits,
                             progress=progress)
        results.append(save_example(ex, out))
    return results
