"""`advisor profile MODEL --target T`: measure a model on a target and show where time goes.

Prints a summary per runtime (p50, p90, cv, peak memory), the model's size and FLOPs, the top hot
spots and the host; `--json FILE` writes the full profile (atomically), which `advisor analyze
--from-profile` accepts — e.g. measured on the real device.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from advisor.cli import app
from advisor.cli.options import (ArchKwargsOpt, ArchOpt, BatchSizeOpt, InputShapeOpt, JsonOutOpt,
                                 MaxSecondsOpt,
                                 ProcessesOpt, RepeatsOpt, RuntimeOpt, TargetOpt, TrustPickleOpt, WarmupOpt)


@app.command("profile")
def profile_cmd(
    model: Annotated[str, typer.Argument(help="Model file (.pt2, .onnx, TorchScript, state_dict + --arch) or pkg.module:factory.")],
    target: TargetOpt = "cpu",
    json_out: JsonOutOpt = None,
    batch_size: BatchSizeOpt = 1,
    input_shape: InputShapeOpt = None,
    arch: ArchOpt = None,
    arch_kwargs: ArchKwargsOpt = None,
    trust_pickle: TrustPickleOpt = False,
    repeats: RepeatsOpt = 100,
    warmup: WarmupOpt = 10,
    max_seconds: MaxSecondsOpt = 10.0,
    processes: ProcessesOpt = 3,
    runtime: RuntimeOpt = None,
) -> None:
    """Measure MODEL on the target: latency per runtime, memory, size, FLOPs and hot spots."""
    from advisor.api import profile
    from advisor.cli.render import stdout_console
    from advisor.errors import TargetError
    from advisor.fileio import write_json_atomic
    from advisor.targets import load_target, target_available

    if json_out is not None:  # before any work: the profile never replaces an input
        from advisor.outdir import reject_input_overwrite
        reject_input_overwrite(Path(json_out).parent, [model, target], [Path(json_out).name])
    tgt = load_target(target)
    ok, why = target_available(tgt)
    if not ok:  # say so before spending time on loading the model
        raise TargetError(f"target {tgt.name!r} cannot be measured on this host: {why}",
                          "run `advisor profile --json` on a machine with that hardware and "
                          "pass the file to `advisor analyze --from-profile`")
    for name in runtime or ():
        tgt.runtime(name)
    from advisor.data_checks import check_input_size
    if json_out is not None:  # a profile that cannot be written fails now, not after measuring
        from advisor.fileio import check_writable_file
        check_writable_file(Path(json_out), what="--json")
    check_input_size(input_shape, batch_size=batch_size)  # before the loader allocates it
    # loads the model, checks its input at this batch size, then measures
    prof = profile(model, target=tgt, arch=arch, arch_kwargs=arch_kwargs,
                   input_shape=input_shape, trust_pickle=trust_pickle, batch_size=batch_size, runtimes=runtime,
                   warmup=warmup, repeats=repeats, max_seconds=max_seconds, processes=processes,
                   progress=True)
    console = stdout_console()
    print_profile(prof, console)
    if json_out is not None:
        path = write_json_atomic(Path(json_out), prof.to_json())
        console.print(f"wrote {path}", highlight=False, soft_wrap=True)


def _mb(x) -> str:
    return "—" if x is None else f"{x:.1f}"


def _count(n) -> str:
    if n is None:
        return "—"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def print_profile(prof, console=None) -> None:
    """The rich tables of a Profile: runtimes, model, hot spots, host, warnings."""
    from rich.markup import escape
    from rich.table import Table

    from advisor.cli.render import stdout_console

    c = console or stdout_console()
    t = prof.target
    label = f"{t['name']}" + (" [bold yellow](emulated)[/]" if t.get("emulated") else "")
    on = t.get("measured_on")
    if on:
        label += f" [bold green](measured on the device {escape(on['label'])} {on['how']})[/]"
    limits = t.get("limits") or {}
    lim = ", ".join(x for x in (
        f"{prof.measurement.get('threads')} thread(s)" if prof.measurement.get("threads") else "",
        f"budget {limits['memory_budget_mb']:g} MB" if limits.get("memory_budget_mb") else "")
        if x)
    c.print(f"[bold]target[/] {label}  {lim}  [bold]batch[/] {prof.batch_size}  "
            f"[bold]input[/] {prof.measurement.get('input_shape')}", soft_wrap=True)

    summary = Table(title="latency per call (ms)" + (" — emulated" if prof.emulated else ""))
    for col in ("runtime", "p50", "p90", "cv", "runs", "peak MB", "status"):
        summary.add_column(col, justify="right" if col not in ("runtime", "status") else "left")
    for name, r in prof.runtimes.items():
        star = " *" if name == prof.primary_runtime else ""
        if r.get("status") == "ok":
            summary.add_row(f"{name}{star}", f"{r['p50']:.3f}", f"{r['p90']:.3f}",
                            f"{r['cv']:.2f}", str(r["runs"]), _mb(r.get("peak_memory_mb")), "ok")
        else:
            summary.add_row(name, "", "", "", "", "",
                            f"[red]{r.get('status')}[/] {r.get('error') or r.get('reason')}")
    c.print(summary)

    model = Table(title="model")
    for col in ("params", "FLOPs (MACs)", "size MB", "peak memory MB", "format"):
        model.add_column(col, justify="right")
    model.add_row(_count(prof.params), _count(prof.flops), _mb(prof.size_mb),
                  _mb(prof.peak_memory_mb), str(prof.model.get("format")))
    c.print(model)

    if prof.hotspots is not None:
        h = prof.hotspots
        hot = Table(title=f"hot spots (top 10 of {len(h.layers)}, {h.method})")
        for col in ("layer", "kind", "type", "ms", "share"):
            hot.add_column(col, justify="right" if col in ("ms", "share") else "left")
        for row in h.top(10):
            hot.add_row(row.name, row.kind, row.type, f"{row.ms:.3f}", f"{row.share:.1%}")
        c.print(hot)
        c.print("time by kind: " + ", ".join(f"{k} {v:.0%}" for k, v in h.kind_shares.items()),
                highlight=False)

    host = prof.host
    where = "device" if on else "host"
    extra = f"governor {host.get('governor')}" if on else \
        f"GPU {(host.get('gpu') or {}).get('name', 'none')}, torch {host.get('torch')}"
    c.print(f"[dim]{where}: {host.get('cpu_model')} ({host.get('arch')}), "
            f"{host.get('cores_available')}/{host.get('cores_logical')} cores, "
            f"{_mb((host.get('memory_mb') or 0) / 1024)} GB, ISA {' '.join(host.get('isa') or []) or '—'}, "
            f"{extra}, onnxruntime {host.get('onnxruntime')}, load {host.get('load_average')}[/]",
            soft_wrap=True, highlight=False)
    if prof.emulated:
        c.print("[yellow]emulated:[/] measured on this host under the target's limits; "
                "relative differences carry over better than absolute times", soft_wrap=True)
    for w in prof.warnings:
        c.print(f"[yellow]note:[/] {escape(w)}", soft_wrap=True, highlight=False)
