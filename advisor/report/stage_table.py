"""The "where and how long" table of the report: for each candidate that ran, where its stages ran
(the nodes of a Ray cluster, the devices its training used) and the seconds per stage, as the
trial recorded them in report.json (`ran_on`, `stage_seconds`); nothing is computed here.

Columns appear only when something fills them: the node column when some candidate ran on Ray
(`ran_on.prepare`/`ran_on.measure`), the training devices when some candidate trained, the wait
for a device when the executor measured it.
"""
from __future__ import annotations

from advisor.report.fmt import DASH, duration

# stage_seconds key → column
STAGES = (("transform", "transform s"), ("train", "train s"), ("export", "export s"),
          ("measure", "measure s"), ("evaluate", "evaluate s"),
          ("waiting_for_device", "waiting for device s"))
NODE, TRAIN, TOTAL = "ran on", "train devices", "total s"
CAPTION = ("Seconds per stage of each trial: transform = the plan's steps that do not train; "
           "train = the training steps; export = the deployable model; measure = latency and "
           "paired timing on the target; evaluate = accuracy and agreement; waiting for device = "
           "queued until a node owning the target was free (Ray). Total = the trial's time "
           "(without the wait); a dash: not recorded.")


def ran(report: dict) -> list[dict]:
    """The candidates whose trial recorded where or how long it ran."""
    return [c for c in report["candidates"] if c.get("stage_seconds") or c.get("ran_on")]


def columns(report: dict) -> list[str]:
    """The table's columns, only those some candidate fills (empty: no section)."""
    cands = ran(report)
    if not cands:
        return []
    ran_on = [c.get("ran_on") or {} for c in cands]
    stages = [c.get("stage_seconds") or {} for c in cands]
    cols = ["id"]
    if any(r.get("prepare") or r.get("measure") for r in ran_on):
        cols.append(NODE)
    if any(r.get("train") for r in ran_on):
        cols.append(TRAIN)
    cols += [col for key, col in STAGES
             if key != "waiting_for_device" or any(key in s for s in stages)]
    return cols + [TOTAL]


def rows(report: dict) -> list[dict[str, str]]:
    """One row of display strings per candidate that ran (keys: `columns(report)`)."""
    out = []
    for c in ran(report):
        r, s = c.get("ran_on") or {}, c.get("stage_seconds") or {}
        row = {"id": c["id"], NODE: nodes_text(r), TRAIN: train_text(r.get("train")),
               TOTAL: duration(c.get("seconds"))}
        row.update({col: duration(s.get(key)) for key, col in STAGES})
        out.append(row)
    return out


def nodes_text(ran_on: dict) -> str:
    """'10.0.0.5 (1a2b3c4d)' when both stages ran on one node, 'prepare … · measure …' when
    not; 'this host' for a trial that ran in a local worker (no node recorded)."""
    prepare, measure = node_text(ran_on.get("prepare")), node_text(ran_on.get("measure"))
    if prepare is None and measure is None:
        return "this host"
    if prepare == measure:
        return prepare
    return f"prepare {prepare or DASH} · measure {measure or DASH}"


def node_text(node: dict | None) -> str | None:
    """A node as its IP and the first 8 characters of its Ray node id."""
    if not node or not (node.get("ip") or node.get("node_id")):
        return None
    short = str(node.get("node_id") or "")[:8]
    return " ".join(p for p in (node.get("ip"), f"({short})" if short else None) if p)


def train_text(train: dict | None) -> str:
    """'cuda:0, 2 workers'; a dash when the trial did not train."""
    if not train:
        return DASH
    n = int(train.get("workers") or 1)
    out_of_step = " (out of step: rank 0 kept)" if train.get("weights_agree") is False else ""
    return f"{train.get('device', DASH)}, {n} worker{'s' if n != 1 else ''}{out_of_step}"
