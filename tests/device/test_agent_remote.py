"""Measurements through a device link, with the same contracts as the local ones; what the host
refuses to believe; and how a `[device]` table is read."""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from advisor.device.connection import DeviceError
from advisor.device.remote import _checked_result
from advisor.errors import TargetError


@pytest.fixture
def device_target(local_link, tmp_path, write_target):
    from advisor.targets import load_target

    table = {"command": list(local_link.command), "cache_dir": local_link.cache_dir}
    return load_target(write_target(tmp_path / "dev.toml", "dev", table, threads=1,
                                    runtimes=("onnxruntime", "torch")))


def test_latency_and_paired_speedup_run_on_the_device(device_target, tiny_onnx):
    from advisor.measure.latency import measure_latency, measure_speedup

    s = measure_latency(tiny_onnx, "onnxruntime", (1, 3, 16, 16), target=device_target,
                        repeats=20, max_seconds=0.2)
    assert s.runs >= 20 and s.p50 > 0 and s.threads == 1 and s.affinity and len(s.affinity) == 1
    assert s.peak_rss_mb and s.peak_rss_mb > 0 and s.emulated is False
    assert "torch" not in s.host and s.host["onnxruntime"]  # the device's fingerprint
    p = measure_speedup(tiny_onnx, tiny_onnx, "onnxruntime", (1, 3, 16, 16),
                        target=device_target, repeats=30, max_seconds=0.3)
    assert 0.5 < p.speedup < 2.0 and p.runs >= 30  # the same file against itself


def test_accuracy_comes_from_the_devices_outputs(device_target, tiny_onnx):
    import onnxruntime as ort

    from advisor.measure.accuracy import artifact_predictor

    x = np.random.default_rng(1).standard_normal((5, 3, 16, 16)).astype(np.float32)
    remote = artifact_predictor(tiny_onnx, "onnxruntime", device_target)(x)
    sess = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    local = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert remote.shape == (5, 10) and np.abs(remote - local).max() < 1e-5


def test_hot_spots_are_profiled_on_the_device(device_target, tiny_onnx):
    from advisor.measure.layers import artifact_hotspots

    h = artifact_hotspots(tiny_onnx, "onnxruntime", (1, 3, 16, 16), threads=1, runs=3,
                          target=device_target)
    assert h.layers and sum(r.ms for r in h.layers) > 0


def test_a_torch_only_candidate_is_not_measurable_on_the_device(device_target, tmp_path):
    """CSR sparse layers run in torch only: reported as not measurable there, never timed on
    this host instead."""
    from advisor.measure.accuracy import artifact_predictor
    from advisor.measure.latency import LatencyError, measure_latency

    pt2 = tmp_path / "candidate.pt2"
    pt2.write_bytes(b"never read")
    with pytest.raises(LatencyError, match="not measurable on the device") as e:
        measure_latency(pt2, "torch", (1, 3, 16, 16), target=device_target)
    assert e.value.kind == "unmeasurable"
    with pytest.raises(LatencyError, match="not measurable on the device"):
        artifact_predictor(pt2, "torch", device_target)


def test_the_installed_agent_route(tmp_path):
    """`agent = "installed"`: the device's own `python -m advisor.agent` (here this venv's)."""
    from advisor.device.connection import AgentConnection
    from advisor.device.link import link_from_table

    link = link_from_table({"command": [sys.executable], "agent": "installed",
                            "cache_dir": str(tmp_path / "c")}, lambda f, w: ValueError(f + w))
    conn = AgentConnection(link)
    try:
        assert conn.hello["protocol"] == 1 and conn.fingerprint()["cores_available"] >= 1
    finally:
        conn.close()
    assert not list((tmp_path / "c").glob("agent-*.pyz"))  # nothing was pushed


GOOD = {"ok": True, "samples_ms": [0.5, 0.6], "peak_rss_mb": 70.0, "threads": 1, "pid": 12}


@pytest.mark.parametrize("bad", [
    {"samples_ms": [0.5, float("nan")]}, {"samples_ms": [-1.0]}, {"samples_ms": []},
    {"samples_ms": ["0.5"]}, {"samples_ms": [1e12]}, {"peak_rss_mb": -3.0},
    {"peak_rss_mb": float("inf")}, {"threads": 1.5}, {"threads": True}, {"ok": "yes"},
])
def test_the_host_refuses_numbers_it_cannot_believe(bad):
    with pytest.raises(DeviceError, match="invalid|malformed"):
        _checked_result({**GOOD, **bad}, paired=False)


def test_the_host_keeps_only_the_fields_it_knows():
    out = _checked_result({**GOOD, "artifact": "/etc/passwd", "eval": "1+1",
                           "error": "x" * 10000}, paired=False)
    assert "artifact" not in out and "eval" not in out
    assert all(math.isfinite(x) for x in out["samples_ms"])
    with pytest.raises(DeviceError):
        _checked_result(GOOD, paired=True)  # a paired result without the reference's samples


def _load(text: str, tmp_path):
    from advisor.targets import load_target

    p = tmp_path / "t.toml"
    p.write_text('name = "d"\nprecisions = ["fp32"]\n' + text +
                 '\n[[runtimes]]\nname = "onnxruntime"\n')
    return load_target(p)


def test_a_device_table_over_ssh(tmp_path):
    t = _load('threads = 512\n[device]\nssh = "pi@raspberrypi"\npython = "python3.11"', tmp_path)
    assert t.link.command[0] == "ssh" and "BatchMode=yes" in t.link.command
    assert t.link.command[-2:] == ("pi@raspberrypi", "python3.11")
    assert t.link.label == "pi@raspberrypi" and t.link.over_ssh
    assert t.threads == 512  # the device's cores, not this host's, bound it
    assert t.arch is None and t.cpu_source == "device"  # unknown until probed
    t = _load('[device]\ncommand = ["ssh", "-p", "2222", "-i", "k", "pi@host", "python3"]',
              tmp_path)
    assert t.link.label == "pi@host" and t.link.over_ssh


@pytest.mark.parametrize("text, says", [
    ('[device]\nssh = "a@b"\ncommand = ["ssh", "a@b", "python3"]', "exactly one"),
    ("[device]\npython = \"python3\"", "exactly one"),
    ('[device]\nssh = "-oProxyCommand=evil"', "SSH destination"),
    ('[device]\nssh = "a@b"\nport = 22', "device.port"),
    ('[device]\nssh = "a@b"\ntype = "cuda"', "device.type"),
    ('[device]\nssh = "a@b"\nagent = "pip"', "device.agent"),
    ('[device]\ncommand = []', "device.command"),
    ('emulated = true\n[device]\nssh = "a@b"', "emulated"),
])
def test_a_bad_device_table_names_the_field(text, says, tmp_path):
    with pytest.raises(TargetError, match=says):
        _load(text, tmp_path)
