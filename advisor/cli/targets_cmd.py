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
    target: Annotated[Optional[str], typer.Argument(help="Show one target (name or .toml path) with its notes.")] = None,
) -> None:
    """List deployment targets: runtimes, threads, memory, precisions, sparse kernels, availability."""
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
