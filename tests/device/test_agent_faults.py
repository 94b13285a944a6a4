"""Faults between host and device: each hits one candidate trial, which fails with the reason;
the agent is started afresh for the next trial and the analysis goes on to a choice."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from advisor.cli import main


PROXY = Path(__file__).with_name("fault_proxy.py")
FAULTS = {  # mode: what the failed trial must say
    "drop": "connection to the device closed",
    "kill": "connection to the device closed",
    "oom": "killed by signal 9",
    "truncate": "truncated or corrupt",
    "version": "speaks protocol 99",
}


@pytest.fixture
def warm_cache(agent_python, tmp_path_factory):
    """A fresh agent cache that already holds the pushed agent (the proxy relays lines only);
    fresh, so that every upload of the run happens (a cached candidate would not be sent)."""
    from advisor.device.connection import AgentConnection
    from advisor.device.link import link_from_table

    cache = tmp_path_factory.mktemp("fault-cache")
    AgentConnection(link_from_table({"command": [str(agent_python)], "cache_dir": str(cache)},
                                    lambda f, why: ValueError(f"{f} {why}"))).close()
    return cache


@pytest.mark.parametrize("mode", sorted(FAULTS))
def test_a_fault_fails_one_trial_and_the_analysis_goes_on(mode, agent_python, warm_cache,
                                                          example_dir, tmp_path, write_target):
    argv = [agent_python, PROXY, mode, tmp_path / "state", "--", agent_python]
    toml = write_target(tmp_path / "faulty.toml", "faulty",
                       {"command": [str(a) for a in argv], "cache_dir": str(warm_cache)},
                       threads=1)
    out = tmp_path / "out"
    rc = main(["analyze", str(example_dir / "resnet.pt2"), "--target", str(toml),
               "--data", str(example_dir / "digits-val.pt"), "--retrain", "none",
               "--max-drop", "2%", "--max-trials", "2", "--repeats", "30", "--out", str(out)])
    assert rc == 0
    assert (tmp_path / "state" / "fired").read_text() == mode  # the fault did happen
    report = json.loads((out / "report.json").read_text())
    tried = [c for c in report["candidates"] if c["status"] in ("ok", "failed")]
    failed = [c for c in tried if c["status"] == "failed"]
    assert len(failed) == 1, [(c["name"], c["status"], c.get("error")) for c in tried]
    assert FAULTS[mode] in failed[0]["error"]
    after = tried[tried.index(failed[0]) + 1:]
    assert after and all(c["status"] == "ok" for c in after)  # a fresh agent served them
    assert report["chosen"] is not None
