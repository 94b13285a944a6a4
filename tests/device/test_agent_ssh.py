"""Over real SSH (an sshd on 127.0.0.1 started for the run): `targets probe`, and a full analysis
of the ResNet example on the probed target next to the local `cpu` target's, in the same run."""
from __future__ import annotations

import json
import shlex

import pytest

from advisor.cli import main

ANALYZE = ["--max-drop", "1%", "--retrain", "none", "--max-trials", "3", "--repeats", "60"]


@pytest.fixture(scope="module")
def probed(sshd, agent_python, tmp_path_factory):
    d = tmp_path_factory.mktemp("probe")
    out = d / "loop.toml"
    rc = main(["targets", "probe", "--command", shlex.join(sshd + [str(agent_python)]),
               "--name", "loop", "--out", str(out), "--cache-dir", str(d / "agent-cache")])
    assert rc == 0
    return out


def test_probe_writes_a_target_from_the_devices_fingerprint(probed, capsys):
    from advisor.measure.host import detect_host
    from advisor.targets import load_target

    t = load_target(probed)
    host = detect_host()
    assert t.link is not None and t.link.over_ssh and t.link.label.endswith("@127.0.0.1")
    assert t.threads == host["cores_available"] and t.arch == "x86"
    assert set(t.isa) == set(host["isa"])
    fast_int8 = "avx2" in host["isa"] or any("vnni" in f for f in host["isa"])
    assert ("int8" in t.precisions) == fast_int8
    assert any("int8" in n for n in t.notes)  # and says why
    assert [r.name for r in t.runtimes] == ["onnxruntime"] and not t.sparse_kernels
    before = probed.read_bytes()
    rc = main(["targets", "probe", "--command", "true", "--name", "loop", "--out", str(probed)])
    assert rc == 2 and "not overwritten" in capsys.readouterr().err
    assert probed.read_bytes() == before


@pytest.fixture(scope="module")
def both_runs(probed, example_dir, tmp_path_factory):
    """The local `cpu` target and the probed one, both at 1 thread and on ONNX Runtime alone, so
    that they offer the same candidates and their speed-ups can be compared: a 2-thread pool on
    this 2-core host stalls whenever anything else takes the other core (the probed profile
    says 2 threads: all the device's cores)."""
    from advisor.targets import PROFILES_DIR

    d = tmp_path_factory.mktemp("runs")
    local = d / "cpu-1.toml"
    text = (PROFILES_DIR / "cpu.toml").read_text()
    local.write_text(text.replace('name = "cpu"', 'name = "cpu-1"\nthreads = 1')
                     .split("[[runtimes]]\nname = \"torch\"")[0])
    remote = d / "loop-1.toml"
    remote.write_text(probed.read_text().replace(f"threads = {_threads(probed)}\n",
                                                 "threads = 1\n"))
    data = ["--data", str(example_dir / "digits-val.pt"),
            "--test-data", str(example_dir / "digits-test.pt")]

    def run(name, target):
        rc = main(["analyze", str(example_dir / "resnet.pt2"), "--target", str(target), *data,
                   *ANALYZE, "--no-cache", "--out", str(d / name)])
        assert rc == 0
        return json.loads((d / name / "report.json").read_text())

    reports = {"local": run("local", local), "ssh": run("ssh", remote)}
    reports["again"] = lambda: {"local": run("local2", local), "ssh": run("ssh2", remote)}
    return reports


def _speedup(report) -> float:
    return report["chosen"]["measured"]["speedup"]


def _threads(toml) -> int:
    from advisor.targets import load_target
    return load_target(toml).threads


def test_analysis_over_ssh_chooses_as_the_local_one(both_runs):
    """Same choice; speed-up within 10%. One pair of runs on this shared 2-vCPU host has read
    14% apart at 1 thread (2.03x over SSH, 2.37x locally) where others agreed within 4%: when the
    first pair is more than 10% apart, a second pair is run and the pairs' means are compared."""
    local, ssh = both_runs["local"], both_runs["ssh"]
    assert local["chosen"] and ssh["chosen"]
    assert ssh["chosen"]["name"] == local["chosen"]["name"]
    a, b = _speedup(ssh), _speedup(local)
    if abs(a - b) / b > 0.10:
        again = both_runs["again"]()
        assert again["ssh"]["chosen"]["name"] == again["local"]["chosen"]["name"] == \
            local["chosen"]["name"]
        a, b = (a + _speedup(again["ssh"])) / 2, (b + _speedup(again["local"])) / 2
    assert abs(a - b) / b <= 0.10, (a, b)


def test_the_report_says_where_it_was_measured(both_runs):
    ssh = both_runs["ssh"]
    on = ssh["target"]["measured_on"]
    assert on["how"] == "over SSH" and on["fingerprint"]["cores_available"] >= 1
    assert ssh["host"]["cpu_model"] == on["fingerprint"]["cpu_model"]
    assert "torch" not in ssh["host"]  # the device's fingerprint, not this host's
    assert both_runs["local"]["target"].get("measured_on") is None
    ok = [c for c in ssh["candidates"] if c["status"] == "ok"]
    assert ok and all(c["measured"]["accuracy"] is not None for c in ok)


def test_an_unreachable_device_is_one_line_with_the_command_to_try(tmp_path, capsys,
                                                                     example_dir):
    toml = tmp_path / "gone.toml"
    toml.write_text('name = "gone"\nprecisions = ["fp32"]\n[device]\nssh = "nobody@127.0.0.1"\n'
                    'connect_timeout_s = 5\n[[runtimes]]\nname = "onnxruntime"\n')
    # port 1 on loopback: nothing listens, the connection is refused at once
    toml.write_text(toml.read_text().replace('ssh = "nobody@127.0.0.1"',
                                             'command = ["ssh", "-p", "1", "-o", '
                                             '"BatchMode=yes", "nobody@127.0.0.1", "python3"]'))
    rc = main(["analyze", str(example_dir / "resnet.pt2"), "--target", str(toml)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines[0].startswith("error: cannot reach the device nobody@127.0.0.1")
    assert "Connection refused" in err and "try: ssh -p 1" in err
    assert len(lines) <= 2
