"""`advisor apply MODEL --plan plan.json --out DIR`: replay a plan and write the optimized model."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from advisor.cli import app
from advisor.cli.options import (ArchKwargsOpt, ArchOpt, InputShapeOpt, TrustPickleOpt,
                                 with_preprocess_options)


@app.command("apply")
@with_preprocess_options
def apply_cmd(
    model: Annotated[str, typer.Argument(help="The ORIGINAL model the plan was made for.")],
    plan: Annotated[Path, typer.Option("--plan", help="plan.json written by `advisor analyze --out`.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory (model.onnx, model.pt2).")],
    target: Annotated[Optional[str], typer.Option("--target", "-t", help="Target to re-measure on (default: the plan's).")] = None,
    train_data: Annotated[Optional[str], typer.Option("--train-data", help="Training data (default: as recorded in the plan).")] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="Calibration/validation data (default: as recorded in the plan).")] = None,
    arch: ArchOpt = None,
    arch_kwargs: ArchKwargsOpt = None,
    input_shape: InputShapeOpt = None,
    trust_pickle: TrustPickleOpt = False,
    allow_import: Annotated[Optional[list[str]], typer.Option(
        "--allow-import", help="Let the plan import this pkg.module:name (a student "
                               "architecture, a data hook); repeatable. Importing runs code.")] = None,
    preprocess=None,  # from with_preprocess_options
) -> None:
    """Replay PLAN on MODEL deterministically, write the optimized model, and show before/after."""
    from rich.table import Table

    from advisor.api import apply_plan
    from advisor.cli.render import stdout_console

    console = stdout_console()
    with console.status("applying the plan and re-measuring..."):
        res = apply_plan(model, plan, out=out, target=target, train_data=train_data,
                         calib_data=data, arch=arch, arch_kwargs=arch_kwargs,
                         preprocess=preprocess,
                         input_shape=input_shape,
                         trust_pickle=trust_pickle, progress=False,
                         allow_imports=tuple(allow_import or ()))
    t = Table(title=f"advisor apply: {plan}")
    for col in ("", "runtime", "p50 ms", "size MB", "accuracy"):
        t.add_column(col)
    for label, row in (("before", res.before), ("after", res.after)):
        acc = f"{row['accuracy']:.1%}" if row.get("accuracy") is not None else "—"
        t.add_row(label, row["runtime"], f"{row['p50_ms']:.3f}", f"{row['size_mb']:.2f}", acc)
    console.print(t)
    console.print(f"speed-up {res.before['p50_ms'] / res.after['p50_ms']:.2f}x, "
                  f"size {res.after['size_mb'] / res.before['size_mb']:.2f}x")
    if res.after.get("size_stored_as") == "gzip":
        console.print("size after: the gzip-compressed file (sparse weights shrink only when "
                      "stored compressed; gunzip it on the device before loading)")
    for k, v in res.files.items():
        console.print(f"wrote {k}: {v}", markup=False, highlight=False)
    for w in getattr(res, "warnings", ()):
        console.print(f"warning: {w}", markup=False, highlight=False, soft_wrap=True)
    rep = res.reproduction
    if rep is None:
        console.print("reproduction: not checked (the plan records no measured model)")
    elif rep["status"] == "reproduced":
        console.print(f"reproduction: reproduced the model analyze measured (outputs within "
                      f"{rep['max_abs_diff']:.2g}, tolerance {rep['tolerance']:g} relative; "
                      f"weights {'identical' if rep['weights_identical'] else 'differ'})",
                      markup=False, highlight=False, soft_wrap=True)
    else:
        console.print(f"warning: reproduction: this is NOT the model analyze measured: "
                      f"{rep.get('reason')}", markup=False, highlight=False, soft_wrap=True)
