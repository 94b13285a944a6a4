"""Zoo fixtures: each model built once and saved in every format, and the coverage table.

`zoo_model(case)` builds the case's model and writes what the loaders read — a `.pt2` as a user
writes it (`torch.export.save`), a state_dict, an ONNX file — keeping only the current model (the
tests run model by model; holding ViT-B and DenseNet at once costs memory for nothing).

Every test records its cell as the `zoo_cell` user property; `tests/zoo/table.py` turns them into
the model × column table (the hooks that collect them are in tests/conftest.py, because the
pytest-xdist controller, which receives every report, loads only that conftest).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch


# 224-px models are compute-bound: unlike the small models of the unit suite, they gain from a
# second thread when the run has the machine to itself (-n 2 gives each worker one)
if os.environ.get("PYTEST_XDIST_WORKER") is None:
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@dataclass
class Prepared:
    case: object
    model: torch.nn.Module
    pt2: Path
    state_dict: Path
    onnx: Path
    work: Path
    data: dict


class _OneAtATime:
    def __init__(self, root: Path):
        self.root = root
        self.current: Prepared | None = None

    def __call__(self, case) -> Prepared:
        if self.current is not None and self.current.case is case:
            return self.current
        if self.current is not None:
            shutil.rmtree(self.current.work.parent, ignore_errors=True)
            self.current = None
        from advisor.export import export_onnx
        from tests.zoo.cases import SHAPE
        from tests.zoo.cells import loaders

        base = self.root / case.id.replace("/", "_")
        (base / "work").mkdir(parents=True, exist_ok=True)
        model = case.build()
        x = torch.randn(*SHAPE)
        ep = torch.export.export(model, (x,))
        torch.export.save(ep, str(base / "model.pt2"))
        torch.save(model.state_dict(), base / "weights.pt")
        export_onnx(model, base / "model.onnx", SHAPE)
        self.current = Prepared(case, model, base / "model.pt2", base / "weights.pt",
                                base / "model.onnx", base / "work", loaders())
        return self.current


@pytest.fixture(scope="session")
def zoo_model(tmp_path_factory):
    return _OneAtATime(tmp_path_factory.mktemp("zoo"))
