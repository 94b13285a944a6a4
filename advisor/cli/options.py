"""Shared `Annotated` option aliases, so every command spells the same option the same way."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

TargetOpt = Annotated[str, typer.Option("--target", "-t",
                                        help="Target profile name (see `advisor targets`) or a .toml path.")]
InputShapeOpt = Annotated[Optional[str], typer.Option(
    "--input-shape", help="Input shape when the model does not record it, e.g. 1,3,224,224.")]
ArchOpt = Annotated[Optional[str], typer.Option(
    "--arch", help="pkg.module:factory returning the nn.Module (for state_dict files).")]
TrustPickleOpt = Annotated[bool, typer.Option(
    "--trust-pickle", help="Allow loading a whole pickled nn.Module. Unpickling runs arbitrary code.")]
JsonOutOpt = Annotated[Optional[Path], typer.Option("--json", help="Write the result as JSON here.")]
FromProfileOpt = Annotated[Optional[Path], typer.Option(
    "--from-profile", help="Use a baseline measured earlier (e.g. on the device) by `advisor profile --json`.")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", "-b", min=1,
                                           help="Batch size of the measured calls.")]
RepeatsOpt = Annotated[int, typer.Option("--repeats", min=1,
                                         help="Timed repeats per runtime, at least (timing spans at least 0.5 s; stops at --max-seconds).")]
WarmupOpt = Annotated[int, typer.Option("--warmup", min=0, help="Untimed warm-up calls per runtime.")]
MaxSecondsOpt = Annotated[float, typer.Option("--max-seconds", min=0.1,
                                              help="Time budget of the timed repeats per runtime.")]
ProcessesOpt = Annotated[int, typer.Option(
    "--processes", min=1, help="Fresh worker processes per runtime; p50 is the median of "
                               "their p50s (process-to-process variation dominates sub-ms "
                               "latencies).")]
RuntimeOpt = Annotated[Optional[list[str]], typer.Option(
    "--runtime", help="Measure only this runtime of the target (torch or onnxruntime); repeatable.")]
MaxTrialsOpt = Annotated[int, typer.Option(
    "--max-trials", min=1, help="At most this many candidate trials (the --budget time limit "
                                "applies too).")]
ArchKwargsOpt = Annotated[Optional[str], typer.Option(
    "--arch-kwargs", help="Keyword arguments of the --arch factory (or of a pkg.module:factory "
                          "model) as a JSON object of literals, e.g. '{\"num_classes\": 10}'.")]
PreprocessOpt = Annotated[Optional[str], typer.Option(
    "--preprocess", help="Image preprocessing preset: imagenet (resize 256, center crop 224, "
                         "ImageNet mean/std) or none. --resize/--crop/--mean/--std override it.")]
ResizeOpt = Annotated[Optional[int], typer.Option(
    "--resize", min=1, help="Resize images so the shorter side is N pixels (bilinear, antialiased).")]
CropOpt = Annotated[Optional[int], typer.Option("--crop", min=1, help="Center crop N×N pixels after resizing.")]
MeanOpt = Annotated[Optional[str], typer.Option(
    "--mean", help="Per-channel mean subtracted after scaling to [0, 1], e.g. 0.485,0.456,0.406.")]
StdOpt = Annotated[Optional[str], typer.Option(
    "--std", help="Per-channel std divided by after the mean, e.g. 0.229,0.224,0.225.")]


def with_preprocess_options(command):
    """Give a command the five preprocessing options (--preprocess, --resize, --crop, --mean,
    --std), declared once here; the command receives them as one `preprocess` argument (a
    `Preprocess`, or None when none was given). typer reads the signature set here."""
    import functools
    import inspect

    extra = {"preprocess_preset": PreprocessOpt, "resize": ResizeOpt, "crop": CropOpt,
             "mean": MeanOpt, "std": StdOpt}
    sig = inspect.signature(command, eval_str=True)  # the commands use postponed annotations
    params = [p for p in sig.parameters.values() if p.name != "preprocess"]
    params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=a)
               for n, a in extra.items()]

    @functools.wraps(command)
    def wrapper(*args, preprocess_preset=None, resize=None, crop=None, mean=None, std=None,
                **kwargs):
        return command(*args, preprocess=preprocess_arg(preprocess_preset, resize, crop, mean,
                                                        std), **kwargs)

    wrapper.__signature__ = sig.replace(parameters=params)
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


def preprocess_arg(preprocess, resize, crop, mean, std):
    """The command line's preprocessing options as one `Preprocess` (None: none given)."""
    if all(v is None for v in (preprocess, resize, crop, mean, std)):
        return None
    from advisor.preprocess import preprocess_from_options

    return preprocess_from_options(preprocess, resize=resize, crop=crop, mean=mean, std=std)
