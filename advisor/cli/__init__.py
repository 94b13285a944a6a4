"""The `advisor` command line: thin typer commands that call the library and print with rich.

Each command lives in its own module under `advisor.cli` and registers itself on `app`.
`main()` turns user errors (`AdvisorError`) into one line plus a hint, exit code 2; the full
traceback only with `--debug` (or ADVISOR_DEBUG=1).
"""
from __future__ import annotations

import importlib
import os
import sys

import typer

app = typer.Typer(
    name="advisor",
    help="Deployment-target aware optimization advisor for PyTorch vision models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")):
    _state["debug"] = debug or os.environ.get("ADVISOR_DEBUG") == "1"


# command modules, imported for their @app.command side effect; absent ones are skipped
_COMMAND_MODULES = ("example_cmd", "targets_cmd", "profile_cmd", "analyze_cmd", "apply_cmd",
                    "rules_cmd")
for _mod in _COMMAND_MODULES:
    try:
        importlib.import_module(f"advisor.cli.{_mod}")
    except ModuleNotFoundError as e:  # only a missing command module itself is tolerated
        if e.name != f"advisor.cli.{_mod}":
            raise


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (see docs/CONTRACTS.md, "Signals, processes, exit
    status"): 0, a command's `typer.Exit` code, 2 for user errors, 1 for internal errors, and
    128 + N after signal N — 130 for SIGINT (Ctrl-C), 143 for SIGTERM — with "interrupted" on
    stderr."""
    from advisor import procs

    previous = procs.install_signal_handlers()  # SIGTERM now unwinds like Ctrl-C
    try:
        procs.remove_stale_scratch()  # advisor-*-PID-* directories of runs killed with -9
        return _main(argv)
    except KeyboardInterrupt as e:  # a signal while printing an error, or outside the command
        return _interrupted(getattr(e, "signum", None))
    finally:
        procs.restore_signal_handlers(previous)


def _interrupted(signum: int | None = None) -> int:
    from advisor import procs

    signum = signum or procs.received_signal() or 2
    print("interrupted" + (" (SIGTERM)" if signum == 15 else ""), file=sys.stderr)
    return procs.exit_code_for(signum)


def _main(argv: list[str] | None) -> int:
    from advisor import procs
    from advisor.errors import AdvisorError

    debug = "--debug" in (argv if argv is not None else sys.argv[1:]) or \
        os.environ.get("ADVISOR_DEBUG") == "1"
    try:
        # standalone_mode=False: typer *returns* the code of a typer.Exit (and turns a
        # KeyboardInterrupt into a returned 130) instead of raising it
        rc = app(args=argv, standalone_mode=False)
        if procs.received_signal() is not None or rc == 130:
            return _interrupted()
        return rc if isinstance(rc, int) and not isinstance(rc, bool) else 0
    except AdvisorError as e:
        if debug:
            raise
        from rich.console import Console
        from rich.markup import escape

        # messages quote paths and settings ("[calibration=minmax]"): printed as written
        err = Console(stderr=True)
        err.print(f"[bold red]error:[/] {escape(e.message)}", highlight=False, soft_wrap=True)
        if e.hint:
            err.print(f"[yellow]hint:[/] {escape(e.hint)}", highlight=False, soft_wrap=True)
        return e.exit_code
    except KeyboardInterrupt as e:
        return _interrupted(getattr(e, "signum", None))
    except SystemExit as e:  # typer/click exits (--help, usage errors), sys.exit in a command
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Exception as e:  # usage errors come as click exceptions in non-standalone mode
        if hasattr(e, "show") and hasattr(e, "exit_code"):  # click.ClickException (typer's click)
            e.show()
            return int(getattr(e, "exit_code", 2) or 2)
        if type(e).__name__ == "Abort":
            return 1
        if debug:
            raise
        print(f"internal error: {type(e).__name__}: {e} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1
    return 0


def run() -> None:
    sys.exit(main())
