"""Terminal rendering of an analysis: live progress while it runs, a rich summary after."""
from __future__ import annotations

import os

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

_STAGES = {"baseline": "measuring the baseline on the target", "decide": "applying the rules",
           "search": "trying candidates", "confirm": "confirming on the held-out split",
           "apply": "writing the optimized model"}


# piped or redirected output has no terminal width; rich then assumes 80 columns and wraps the
# candidates table one word per line, so such output gets room unless COLUMNS says otherwise
PIPED_WIDTH = 140


def stdout_console() -> Console:
    """The console for a command's results: the terminal's width, or PIPED_WIDTH when piped."""
    console = Console()
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console = Console(width=PIPED_WIDTH)
    return console


class Reporter:
    """Progress fed by `analyze(on_event=...)`: the stage of the run and of each trial, with the
    trial's ETA (its cost estimate) and when the search ends at the latest (its budget).

    On a terminal a live bar shows it; when output is piped or redirected, where a bar prints
    nothing, one timestamped line per stage goes to stderr instead."""

    def __init__(self, console: Console | None = None):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn,
                                   TextColumn, TimeElapsedColumn)
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(),
                                 console=self.console, transient=True)
        self.task = None
        self.trial: dict = {}

    def __enter__(self):
        self.progress.__enter__()
        self.task = self.progress.add_task("starting", total=None)
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)
        return False

    def _line(self, text: str) -> None:
        import time

        # console.print, not console.log: a log line ends in this file's name and line number
        self.console.print(f"[dim]\\[{time.strftime('%H:%M:%S')}][/] {escape(text)}",
                           soft_wrap=True, highlight=False)

    def event(self, kind: str, payload: dict) -> None:
        if kind == "stage":
            name = payload["name"]
            total = payload.get("candidates") if name == "search" else None
            self.progress.update(self.task, description=_STAGES.get(name, name), total=total,
                                 completed=0)
            self._line(_STAGES.get(name, name))
        elif kind == "trial":
            import time

            self.trial = {**payload, "started": time.time()}
            self.progress.update(self.task, description=f"trying {escape(payload['name'])}",
                                 completed=payload["i"], total=payload["n"])
            self._line(f"trial {payload['i'] + 1}/{payload['n']}: {payload['name']}"
                       f"{_eta(payload)}")
        elif kind == "trial_stage" and self.trial:
            import time

            name = payload.get("trial") or self.trial["name"]
            mine = name == self.trial["name"]  # another trial in flight has no ETA here
            left = (self.trial.get("estimate_s") or 0.0) - (time.time() - self.trial["started"])
            eta = f" (~{left:.0f} s left in this trial)" if left > 1 and mine else ""
            text = f"{name}: {payload['stage']}{eta}"
            self.progress.update(self.task, description=escape(text))
            if not self.live:
                self._line(f"  {payload['stage']}{eta}" if mine else f"  {text}")


def _eta(trial: dict) -> str:
    import time

    parts = []
    if trial.get("estimate_s"):
        parts.append(f"estimated {trial['estimate_s']:.0f} s")
    if trial.get("search_ends_by"):
        parts.append("search ends by " + time.strftime("%H:%M", time.localtime(
            trial["search_ends_by"])) + " at the latest")
    return f" ({', '.join(parts)})" if parts else ""


def _pct(x) -> str:
    return "—" if x is None else f"{x * 100:.1f}%"


def print_analysis(result, console: Console | None = None) -> None:
    c = console or stdout_console()
    r = result.report
    b = r["baseline"]
    verified = r["data"]["verified"]
    from advisor.report.facts import target_label

    tgt = target_label(r)
    c.print(f"[bold]model[/] {escape(str(r['model']['path']))}  "
            f"[bold]target[/] {escape(tgt)}  "
            f"[bold]goal[/] {r['factors']['goal']}  [bold]max drop[/] "
            f"{r['factors']['allowed_drop_points']:.2f} pts  [bold]retrain[/] "
            f"{r['factors']['retrain']}")
    t = Table(title="candidates (measured on the target)")
    for col in ("id", "plan", "status", "runtime", "p50 ms", "speed-up", "size MB",
                "accuracy" if verified else "agreement", "meets"):
        t.add_column(col)
    base_rt = b.get("runtime", "")
    t.add_row("base", "original (fp32)", "ok", base_rt,
              f"{b['latency_ms']['p50']:.3f}", "1.00x", f"{b['size_mb']:.2f}",
              _pct(b.get("accuracy")) if verified else "100.0%", "")
    for cand in r["candidates"]:
        m = cand.get("measured") or {}
        if cand["status"] != "ok":
            t.add_row(cand["id"], escape(cand["name"]), f"[red]{cand['status']}[/]", "", "", "",
                      "", "", escape((cand.get("error") or "")[:60]))
            continue
        quality = _pct(m.get("accuracy")) if verified else \
            _pct((m.get("agreement") or {}).get("top1_agreement"))
        # names carry their settings in brackets ("int8 static [calibration=minmax]"), which
        # rich would take for markup and drop: every text from the report is escaped
        t.add_row(cand["id"], escape(cand["name"]), "ok", m.get("runtime", ""),
                  f"{m['latency_ms']['p50']:.3f}", f"{m.get('speedup') or 0:.2f}x",
                  f"{m['size_mb']:.2f}", quality,
                  "[green]yes[/]" if cand["meets_constraints"] else
                  f"[yellow]no[/] {escape('; '.join(cand['violations'])[:50])}")
    c.print(t)
    if r.get("measurement", {}).get("latency"):
        c.print(f"[dim]{escape(r['measurement']['latency'])}[/]", soft_wrap=True)
    chosen = r.get("chosen")
    if chosen:
        m = chosen["measured"]
        steps = " → ".join(s["pass"] for s in chosen["plan"]["steps"])
        acc = (f"accuracy val {_pct(m.get('accuracy'))}, held-out {_pct(chosen.get('accuracy_test'))} "
               f"(baseline {_pct(b.get('accuracy_test'))})") if verified else \
            "accuracy unverified (no --data): agreement with the original " + \
            _pct((m.get('agreement') or {}).get('top1_agreement'))
        c.print(Panel(f"[bold]{escape(chosen['name'])}[/]  ({steps})\n"
                      f"{m['speedup']:.2f}x faster, {1 / m['size_ratio']:.2f}x smaller, {acc}",
                      title="recommendation", border_style="green"))
        if chosen.get("int8_layer_cost"):
            c.print(escape(chosen["int8_layer_cost"]["text"]), soft_wrap=True)
    else:
        names = [x["name"] for x in r["candidates"] if x["id"] in r.get("closest", [])]
        c.print(Panel("No plan met every constraint. Closest: " + (escape(", ".join(names)) or "none") +
                      ".\nEverything measured is kept in the report; a retraining budget "
                      "(--retrain finetune --train-data ...) or a larger --max-drop widens the options.",
                      title="recommendation", border_style="yellow"))
    tc = r.get("trial_cache") or {}
    if tc.get("reused"):
        c.print(f"{tc['reused']} trial(s) reused from the trial cache ({escape(tc['dir'])}): "
                "the same model, data, target and settings; --no-cache measures them again",
                soft_wrap=True)
    for w in r.get("warnings", []):
        c.print(f"[yellow]note:[/] {escape(w)}")
    if result.files:
        for k, v in result.files.items():
            c.print(f"wrote {k}: {escape(str(v))}")
