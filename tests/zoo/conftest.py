"""Zoo fixtures: each model built once and saved in every format, and the coverage table.

`zoo_model(case)` builds the case's model and writes what the loaders read — a `.pt2` as a user
writes it (`torch.export.save`), a state_dict, an ONNX file — keeping only the current model (the
tests run model by model; holding ViT-B and DenseNet at once costs memory for nothing).

Every test records its cell as the `zoo_cell` user property; the process that receives the test
reports (the xdist controller, or the only process) collects them, and with
`ADVISOR_ZOO_TABLE=path.md` set writes the model × column table there at the end of the session
(benchmarks/results/zoo.md is written this way), with the host.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.zoo.cells import Cell

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


class ZooTable:
    """The cells of this run, collected where reports arrive (the xdist controller, or the one
    process without xdist) from each test's `zoo_cell` user property."""

    def __init__(self):
        self.cells: dict[tuple[str, str], Cell] = {}

    def record(self, props: dict) -> None:
        self.cells[(props["model"], props["column"])] = Cell(props["status"], props["text"],
                                                            props["seconds"])

    def markdown(self) -> str:
        from advisor.measure.host import detect_host

        from tests.zoo.cases import CASES
        from tests.zoo.test_zoo import COLUMNS

        host = detect_host()
        lines = ["# Zoo coverage: model × pass", "",
                 "Written by `ADVISOR_ZOO_TABLE=benchmarks/results/zoo.md .venv-vision/bin/python "
                 "-m pytest -m zoo` (tests/zoo). Random weights, 1×3×224×224, CPU. **ok**: applied "
                 "and its effect checked (the text says what was found); **refused**: the pass "
                 "declined before any work, with its one-line reason; **failed**: anything else "
                 "(the tests fail on it).", "",
                 f"Host: {host.get('cpu_model')} ({host.get('arch')}), ISA "
                 f"{', '.join(host.get('isa') or []) or '-'}; torch {torch.__version__}; "
                 f"{torch.get_num_threads()} thread(s).", ""]
        counts: dict[str, int] = {}
        for cell in self.cells.values():
            counts[cell.status] = counts.get(cell.status, 0) + 1
        lines += ["Cells: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), ""]
        for case in CASES:
            row = [(col, self.cells.get((case.id, col))) for col in COLUMNS]
            if not any(c for _, c in row):
                continue
            lines += [f"## {case.id}", "", f"`--arch {case.arch}`" +
                      (f" `--arch-kwargs '{_json(case.kwargs)}'`" if case.kwargs else ""), "",
                      "| column | result | s |", "|---|---|---:|"]
            for col, cell in row:
                if cell is None:
                    lines.append(f"| {col} | not run | |")
                else:
                    text = cell.text.replace("|", "\\|")
                    lines.append(f"| {col} | **{cell.status}**: {text} | {cell.seconds:.1f} |")
            lines.append("")
        return "\n".join(lines) + "\n"


def _json(d: dict) -> str:
    import json
    return json.dumps(d)


_TABLE = ZooTable()


def pytest_runtest_logreport(report):
    for name, value in getattr(report, "user_properties", ()):
        if name == "zoo_cell":
            _TABLE.record(value)


def pytest_sessionfinish(session, exitstatus):
    target = os.environ.get("ADVISOR_ZOO_TABLE")
    if target and _TABLE.cells and not hasattr(session.config, "workerinput"):
        from advisor.fileio import write_text_atomic

        write_text_atomic(Path(target), _TABLE.markdown())
