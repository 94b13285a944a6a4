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
