"""The zoo's model × column table, from the `zoo_cell` user property of every zoo test.

The process that receives the test reports (the pytest-xdist controller, or the only process)
collects the cells through the hooks in tests/conftest.py; with `ADVISOR_ZOO_TABLE=path.md` set,
the table is written there at the end of the session (benchmarks/results/zoo.md is written so),
with the host it was measured on.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from tests.zoo.cells import Cell


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


def collect(report) -> None:
    for name, value in getattr(report, "user_properties", ()):
        if name == "zoo_cell":
            _TABLE.record(value)


def write_if_asked(session) -> None:
    target = os.environ.get("ADVISOR_ZOO_TABLE")
    if target and _TABLE.cells and not hasattr(session.config, "workerinput"):
        from advisor.fileio import write_text_atomic

        write_text_atomic(Path(target), _TABLE.markdown())
