"""`advisor example --out DIR`: train the built-in example models on digits and write them.

Gives a new user something real to run the advisor on in about a minute: `.pt2` models that
record their architecture (so they load as editable modules) plus `digits-{train,val,test}.pt`.
Existing files are never overwritten without `--force`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from advisor.cli import app

DEFAULT_MODELS = "resnet,mobilenet,vgg"


@app.command("example")
def example_cmd(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the models and data into.")],
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, help="Training epochs per model (default: tuned per model).")] = None,
    models: Annotated[str, typer.Option("--models", help="Comma-separated example models: resnet, mobilenet, vgg, concatnet, mlp.")] = DEFAULT_MODELS,
    force: Annotated[bool, typer.Option("--force", help="Overwrite example files already in --out.")] = False,
    zoo: Annotated[bool, typer.Option("--zoo", help="Instead: torchvision resnet18 and mobilenet_v2 (num_classes=10) trained on digits (needs torchvision: scripts/install.sh vision).")] = False,
) -> None:
    """Train example models on scikit-learn's digits and write .pt2 models plus data splits."""
    from advisor.cli.render import stdout_console

    console = stdout_console()
    if zoo:
        from advisor.examples.zoo import ZOO_EXAMPLES, require_torchvision, write_zoo_examples

        require_torchvision()
        names = tuple(ZOO_EXAMPLES)
        _refuse_overwrite(out, names, force)
        console.print(f"training {', '.join(names)} (torchvision, num_classes=10) on digits "
                      f"(32x32, 3 channels) → {out}", soft_wrap=True, highlight=False)
        results = write_zoo_examples(out, names=names, epochs=epochs, progress=True)
    else:
        from advisor.examples.build import write_examples

        names = _model_names(models)
        _refuse_overwrite(out, names, force)
        console.print(f"training {', '.join(names)} on digits (32x32, 3 channels) → {out}",
                      soft_wrap=True, highlight=False)
        results = write_examples(out, names=names, epochs=epochs, progress=True)
    console.print(_table(results, out))
    data = {s: out / f"digits-{s}.pt" for s in ("train", "val", "test")}
    console.print(f"data: {data['train']}, {data['val']}, {data['test']}", soft_wrap=True,
                  highlight=False)
    first = out / f"{names[0]}.pt2"
    arch = f" --arch {results[0].arch}" if zoo else ""
    console.print("next:", highlight=False)
    for command in (f"advisor profile {first}{arch} --target cpu",
                    f"advisor analyze {first}{arch} --target cpu --data {data['val']} "
                    f"--test-data {data['test']}"):
        console.print(f"  {command}", soft_wrap=True, highlight=False, markup=False)


def _model_names(models: str) -> tuple[str, ...]:
    from advisor.errors import AdvisorError
    from advisor.examples.models import FACTORIES

    names = tuple(dict.fromkeys(n.strip() for n in models.split(",") if n.strip()))
    unknown = [n for n in names if n not in FACTORIES]
    if not names or unknown:
        raise AdvisorError(f"unknown example model(s): {', '.join(unknown) or '(none given)'}",
                           f"choose from {', '.join(FACTORIES)}")
    return names


def example_files(out: Path, names: tuple[str, ...]) -> list[Path]:
    """Every file `write_examples` writes for `names` into `out`."""
    return [out / f"digits-{s}.pt" for s in ("train", "val", "test")] + \
        [out / f"{n}.pt2" for n in names]


def _refuse_overwrite(out: Path, names: tuple[str, ...], force: bool) -> None:
    from advisor.errors import AdvisorError

    if out.exists() and not out.is_dir():
        raise AdvisorError(f"--out {out} is a file, not a directory", "choose a directory")
    existing = [p.name for p in example_files(out, names) if p.exists()]
    if existing and not force:
        raise AdvisorError(f"{out} already holds {', '.join(existing)}",
                           "pass --force to overwrite them, or choose another --out")


def _table(results, out: Path):
    from rich.table import Table

    table = Table(title="example models (trained on digits)")
    for col, justify in (("model", "left"), ("params", "right"), ("val acc", "right"),
                         ("test acc", "right"), ("train s", "right"), ("file", "left")):
        table.add_column(col, justify=justify)
    for ex in results:
        params = sum(p.numel() for p in ex.model.parameters())
        table.add_row(ex.name, f"{params:,}", f"{ex.val_accuracy:.1%}", f"{ex.test_accuracy:.1%}",
                      f"{ex.train_seconds:.1f}", str(out / f"{ex.name}.pt2"))
    return table
