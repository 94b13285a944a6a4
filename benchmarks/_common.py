"""Shared helpers for the benchmark scripts: example models, data files, table output."""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
WORK = Path(__file__).parent / "work"


def ensure_examples(names=("resnet", "mobilenet", "vgg")) -> Path:
    """Train the example models once (cached under benchmarks/work/example)."""
    from advisor.examples.build import write_examples

    out = WORK / "example"
    missing = [n for n in names if not (out / f"{n}.pt2").exists()]
    if missing or not (out / "digits-test.pt").exists():
        write_examples(out, names=tuple(missing) or tuple(names), progress=False)
    return out


def markdown_table(headers: list[str], rows: list[list]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return "—" if v is None else str(v)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def record(name: str, data: dict, markdown: str) -> None:
    """Write results/<name>.json and results/<name>.md (with host and date)."""
    from advisor.fileio import write_json_atomic, write_text_atomic

    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "host": platform.processor() or platform.machine()}
    write_json_atomic(RESULTS / f"{name}.json", {"meta": meta, **data})
    write_text_atomic(RESULTS / f"{name}.md", f"<!-- recorded {meta['date']} -->\n{markdown}\n")
    print(markdown)


def dump(obj) -> str:
    return json.dumps(obj, indent=2, default=str)
