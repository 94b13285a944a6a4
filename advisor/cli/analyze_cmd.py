"""`advisor analyze MODEL --target T --max-drop 1% ...`: the whole advisor in one command."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from advisor.cli import app
from advisor.cli.options import (ArchKwargsOpt, ArchOpt, FromProfileOpt, InputShapeOpt,
                                 MaxTrialsOpt, RepeatsOpt, TargetOpt, TrustPickleOpt,
                                 with_preprocess_options)


@app.command("analyze")
@with_preprocess_options
def analyze_cmd(
    model: Annotated[str, typer.Argument(help="Model file (.pt2 recommended, .onnx, TorchScript, state_dict + --arch) or pkg.module:factory.")],
    target: TargetOpt = "cpu",
    max_drop: Annotated[str, typer.Option("--max-drop", help="Tolerable accuracy drop: '1%' = 1 point of top-1; '2%rel' = 2% of the baseline.")] = "1%",
    goal: Annotated[str, typer.Option("--goal", help="Main problem: latency, size or balanced.")] = "latency",
    max_latency: Annotated[Optional[str], typer.Option("--max-latency", help="Latency ceiling, e.g. 10ms.")] = None,
    max_size: Annotated[Optional[str], typer.Option("--max-size", help="Size ceiling, e.g. 5MB.")] = None,
    retrain: Annotated[str, typer.Option("--retrain", help="Retraining budget: none, finetune or full.")] = "none",
    data: Annotated[Optional[str], typer.Option("--data", help="Validation data (.pt/.npz, image folder, or pkg.module:function).")] = None,
    test_data: Annotated[Optional[str], typer.Option("--test-data", help="Held-out data to confirm the chosen plan (default: half of --data).")] = None,
    train_data: Annotated[Optional[str], typer.Option("--train-data", help="Labelled training data (needed for --retrain finetune/full).")] = None,
    budget: Annotated[Optional[str], typer.Option("--budget", help="Wall-clock budget of the search, e.g. 10m.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write report.md/.html/.json and plan.json here.")] = None,
    apply: Annotated[bool, typer.Option("--apply", help="Also write the optimized model (needs --out).")] = False,
    arch: ArchOpt = None,
    arch_kwargs: ArchKwargsOpt = None,
    input_shape: InputShapeOpt = None,
    trust_pickle: TrustPickleOpt = False,
    from_profile: FromProfileOpt = None,
    max_trials: MaxTrialsOpt = 20,
    repeats: RepeatsOpt = 100,
    inline: Annotated[bool, typer.Option("--inline", help="Run trials in this process (no isolation; debugging).")] = False,
    executor: Annotated[str, typer.Option("--executor", help="Where trials run: process (fresh local worker processes, default) or ray (a Ray cluster; pip install 'advisor[ray]').")] = "process",
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="With --executor ray: the cluster to join (default: start a local Ray instance).")] = None,
    train_workers: Annotated[int, typer.Option("--train-workers", help="Data-parallel processes per training step (fine-tuning, distillation): local processes (gloo on CPU, NCCL with one GPU each), or Ray Train workers with --executor ray. The same seed and count give the same model.")] = 1,
    cache: Annotated[Optional[Path], typer.Option("--cache", help="Trial cache directory (default $ADVISOR_CACHE_DIR or ~/.cache/advisor/trials): finished trials are reused by a rerun of the same inputs.")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Neither reuse nor keep trials.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted analysis of the same inputs (its finished trials are reused).")] = False,
    preprocess=None,  # from with_preprocess_options
) -> None:
    """Measure MODEL on the target, choose compression plans by the four factors, try them, and report."""
    from advisor.api import analyze
    from advisor.cli.render import Reporter, print_analysis
    from advisor.errors import FactorError

    if apply and out is None:
        raise FactorError("--apply needs --out DIR (where the optimized model is written)")
    with Reporter() as rep:
        result = analyze(model, target=target, max_drop=max_drop, goal=goal,
                         max_latency=max_latency, max_size=max_size, retrain=retrain, data=data,
                         test_data=test_data, train_data=train_data, budget=budget, out=out,
                         apply=apply, arch=arch, arch_kwargs=arch_kwargs,
                         preprocess=preprocess,
                         input_shape=input_shape,
                         trust_pickle=trust_pickle, from_profile=from_profile,
                         executor="inline" if inline else executor, max_trials=max_trials,
                         measure={"repeats": repeats}, progress=False, on_event=rep.event,
                         cache=False if no_cache else cache, resume=resume,
                         ray_address=ray_address, train_workers=train_workers)
    print_analysis(result)
