"""`advisor rules`: the rule table of the decision engine."""
from __future__ import annotations

from advisor.cli import app


@app.command("rules")
def rules_cmd() -> None:
    """Print the rules the advisor uses to choose techniques, with what each says."""
    from rich.table import Table

    from advisor.cli.render import stdout_console

    from advisor.decide.engine import rule_table

    t = Table(title="advisor rules (pure functions of the four factors and the measured profile)")
    t.add_column("rule", style="bold")
    t.add_column("what it says")
    for row in rule_table():
        t.add_row(row["rule"], row["summary"])
    stdout_console().print(t)
