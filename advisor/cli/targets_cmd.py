"""`advisor targets`: the built-in target profiles and whether this host can measure them."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from advisor.cli import app


def _short(r) -> str:
    """'onnxruntime (CPU)' for onnxruntime with CPUExecutionProvider; 'torch' for torch."""
    return r.name if not r.provider else f"{r.name} ({r.provider.replace('ExecutionProvider', '')})"


@app.command("targets")
def targets_cmd(
    target: Annotated[Optional[str], typer.Argument(help="Show one target (name or .toml path) with its notes; or `probe` to fingerprint a device and write its profile.")] = None,
    ssh: Annotated[Optional[str], typer.Option("--ssh", help="probe: the device's SSH destination (user@host; your ssh config applies).")] = None,
    command: Annotated[Optional[str], typer.Option("--command", help="probe: instead of --ssh, the command line that starts Python on the device, e.g. \"ssh -p 2222 pi@host python3\".")] = None,
    python: Annotated[str, typer.Option("--python", help="probe: the device's Python (with --ssh).")] = "python3",
    name: Annotated[Optional[str], typer.Option("--name", help="probe: the target's name (writes NAME.toml).")] = None,
    out: Annotated[Optional[str], typer.Option("--out", help="probe: where to write the profile (default ./NAME.toml).")] = None,
    force: Annotated[bool, typer.Option("--force", help="probe: overwrite an existing profile file.")] = False,
    cache_dir: Annotated[Optional[str], typer.Option("--cache-dir", help="probe: the agent's cache directory on the device (default ~/.cache/advisor-agent).")] = None,
) -> None:
    """List deployment targets: runtimes, threads, memory, precisions, sparse kernels, availability.

    `advisor targets probe --ssh pi@raspberrypi --name pi5` connects to a device, fingerprints it
    and writes pi5.toml: a target whose every measurement runs on that device."""
    if target == "probe":
        return _probe(ssh, command, python, name, out, force, cache_dir)
    if any(v is not None for v in (ssh, command, name, out, cache_dir)):
        from advisor.errors import TargetError
        raise TargetError("--ssh, --command, --name, --out and --cache-dir are for "
                          "`advisor targets probe`")
    from rich.table import Table

    from advisor.cli.render import stdout_console
    from advisor.targets import detect_host, list_targets, load_target, target_available

    targets = [load_target(target)] if target else list_targets()
    from rich import box

    table = Table(title="targets", box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True,
                  show_edge=False, pad_edge=False)
    for col in ("name", "device", "runtimes", "threads", "memory", "precisions", "sparse",
                "here"):
        table.add_column(col, no_wrap=col != "runtimes", overflow="fold")
    reasons = []
    for t in targets:
        ok, why = target_available(t)
        reasons.append(f"{t.name}: {'available' if ok else '[red]unavailable[/]'} — {why}"
                       + (f"; {t.description}" if t.description and not target else ""))
        table.add_row(
            t.name, t.device, "\n".join(_short(r) for r in t.runtimes), str(t.threads or "all"),
            f"{t.memory_budget_mb:g} MB" if t.memory_budget_mb else "—",
            "\n".join(t.precisions), " ".join(t.sparse_kernels) or "none",
            "[green]yes[/]" if ok else "[red]no[/]")
    console = stdout_console()
    console.print(table)
    for line in reasons:
        console.print(line, soft_wrap=True, highlight=False)
    if target:
        t = targets[0]
        console.print(f"[bold]{t.name}[/]: {t.description}  [dim]({t.source_path})[/]",
                      soft_wrap=True, highlight=False)
        for note in t.notes:
            console.print(f"  - {note}", soft_wrap=True, highlight=False)
    host = detect_host()
    console.print(f"[dim]this host: {host.get('cpu_model')} ({host.get('arch')}), "
                  f"{host.get('cores_available')} core(s) available, ISA "
                  f"{' '.join(host.get('isa') or []) or '—'}, GPU "
                  f"{(host.get('gpu') or {}).get('name', 'none')}[/]",
                  soft_wrap=True, highlight=False)


def _probe(ssh, command, python, name, out, force, cache_dir) -> None:
    import shlex
    from pathlib import Path

    from advisor.cli.render import stdout_console
    from advisor.device.probe import probe
    from advisor.errors import TargetError

    if (ssh is None) == (command is None):
        raise TargetError("`advisor targets probe` needs --ssh USER@HOST or --command \"...\"",
                          "e.g. advisor targets probe --ssh pi@raspberrypi --name pi5")
    if not name:
        raise TargetError("`advisor targets probe` needs --name (the target's name)")
    table = {"ssh": ssh, "python": python} if ssh else {"command": shlex.split(command)}
    if cache_dir:
        table["cache_dir"] = cache_dir
    path, fp, _ = probe(name, table, Path(out or f"{name}.toml"), force=force)
    console = stdout_console()
    console.print(f"{fp.get('cpu_model')} ({fp.get('arch')}), {fp.get('cores_available')} "
                  f"core(s), {fp.get('memory_mb')} MB, onnxruntime {fp.get('onnxruntime')}, ISA "
                  f"{' '.join(fp.get('isa') or []) or '—'}", soft_wrap=True, highlight=False)
    console.print(f"wrote {path}: use it with --target {path}", soft_wrap=True, highlight=False)
