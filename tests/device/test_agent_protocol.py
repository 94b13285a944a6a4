"""The agent's protocol and what it refuses, spoken to directly (a local-command link into the
torch-free agent environment)."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess

import numpy as np
import pytest

from advisor.agent.protocol import MAX_LINE_BYTES, PROTOCOL
from advisor.device.connection import AgentConnection, DeviceError


@pytest.fixture
def conn(local_link):
    c = AgentConnection(local_link)
    yield c
    c.close()


def _put(conn, data: bytes, sha: str | None = None, size: int | None = None):
    return conn.call("put", sha256=sha or hashlib.sha256(data).hexdigest(),
                     size=len(data) if size is None else size, offset=0,
                     data=base64.b64encode(data).decode(), last=True)


def test_hello_and_fingerprint_describe_the_device(conn):
    assert conn.hello["protocol"] == PROTOCOL and conn.hello["pid"] > 0
    fp = conn.fingerprint()
    assert fp["cores_available"] >= 1 and fp["onnxruntime"]
    assert "CPUExecutionProvider" in fp["onnxruntime_providers"]
    assert fp["memory_mb"] and fp["memory_mb"] > 0
    assert "torch" not in fp  # the agent's fingerprint never asks torch


def test_the_agent_is_pushed_once_then_found_in_its_cache(local_link):
    first = AgentConnection(local_link)
    first.close()
    second = AgentConnection(local_link)
    second.close()
    cached = list((local_link.cache_dir and __import__("pathlib").Path(local_link.cache_dir)
                   ).glob("agent-*.pyz"))
    assert len(cached) == 1


def test_a_truncated_upload_is_refused_and_never_stored(conn):
    data = b"x" * 1000
    sha = hashlib.sha256(data).hexdigest()
    with pytest.raises(DeviceError, match="truncated or corrupt") as e:
        _put(conn, data[:900], sha=sha, size=1000)
    assert e.value.kind == "upload"
    assert conn.call("has", blobs=[sha])["have"] == []
    assert conn.alive  # one bad request does not end the session
    assert _put(conn, data)["stored"] is True
    assert conn.call("has", blobs=[sha])["have"] == [sha]


def test_an_altered_upload_is_refused(conn):
    data = b"y" * 100
    with pytest.raises(DeviceError, match="truncated or corrupt"):
        _put(conn, b"z" * 100, sha=hashlib.sha256(data).hexdigest())


def test_requests_name_files_by_hash_only_never_by_path(conn, tiny_onnx):
    for bad in ("../../etc/passwd", "/etc/passwd", str(tiny_onnx)):
        with pytest.raises(DeviceError, match="sha256"):
            conn.call("measure", request={"runtime": "onnxruntime", "artifact": bad,
                                          "input_shape": [1, 3, 16, 16]})


def test_a_file_that_is_not_onnx_is_refused(conn):
    sha = conn.ensure_bytes(b"\x80\x04K\x01." * 10)  # a pickle
    with pytest.raises(DeviceError, match="not an ONNX model") as e:
        conn.call("measure", request={"runtime": "onnxruntime", "artifact": sha,
                                      "input_shape": [1, 3, 16, 16]})
    assert e.value.kind == "refused"


def test_a_model_with_external_data_is_refused(conn, tmp_path, tiny_onnx):
    import onnx

    m = onnx.load(str(tiny_onnx))
    t = m.graph.initializer[0]  # its bytes "live" in a file outside the agent's cache
    t.ClearField("raw_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    entry = t.external_data.add()
    entry.key, entry.value = "location", "../../secret"
    path = tmp_path / "ext.onnx"
    path.write_bytes(m.SerializeToString())
    sha = conn.ensure_file(path)
    with pytest.raises(DeviceError, match="external data") as e:
        conn.call("run", model=sha, inputs=conn.ensure_bytes(_npy(np.zeros((1, 3, 16, 16)))))
    assert e.value.kind == "refused"


def test_torch_models_and_unknown_fields_are_refused(conn, tiny_onnx):
    sha = conn.ensure_file(tiny_onnx)
    with pytest.raises(DeviceError, match="onnxruntime only") as e:
        conn.call("measure", request={"runtime": "torch", "artifact": sha,
                                      "input_shape": [1, 3, 16, 16]})
    assert e.value.kind == "unsupported"
    with pytest.raises(DeviceError, match="input_shape"):
        conn.call("measure", request={"runtime": "onnxruntime", "artifact": sha,
                                      "input_shape": [1, 3, -16, 16]})
    with pytest.raises(DeviceError, match="allocator_env"):
        conn.call("measure", request={"runtime": "onnxruntime", "artifact": sha,
                                      "input_shape": [1, 3, 16, 16],
                                      "allocator_env": {"LD_PRELOAD": "/tmp/x.so"}})
    with pytest.raises(DeviceError, match="unknown operation"):
        conn.call("exec", code="print(1)")


def test_inputs_are_never_unpickled(conn, tiny_onnx):
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DeviceError, match="pickle"):
        conn.call("run", model=conn.ensure_file(tiny_onnx), inputs=conn.ensure_bytes(buf.getvalue()))


def test_run_returns_the_device_runtimes_outputs(conn, tiny_onnx):
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
    ans = conn.call("run", model=conn.ensure_file(tiny_onnx), inputs=conn.ensure_bytes(_npy(x)))
    out = np.frombuffer(base64.b64decode(ans["data"]), np.float32).reshape(ans["shape"])
    sess = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert out.shape == (3, 10) and np.abs(out - ref).max() < 1e-5


def test_a_request_over_the_size_cap_ends_the_session(local_link):
    from advisor.device.bundle import launch_argv

    proc = subprocess.Popen(launch_argv(local_link), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    first = proc.stdout.readline().strip()
    if first == b"NEED":
        from advisor.device.bundle import agent_archive
        proc.stdin.write(agent_archive())
    proc.stdin.write(b'{"v": 1, "id": 1, "op": "has", "blobs": ["' + b"a" * MAX_LINE_BYTES
                     + b'"]}\n')
    proc.stdin.flush()
    answer = json.loads(proc.stdout.readline())
    assert answer["ok"] is False and answer["kind"] == "protocol" and "cap" in answer["error"]
    assert proc.wait(timeout=30) == 1


def test_another_protocol_version_is_refused(conn):
    conn.proc.stdin.write(b'{"v": 99, "id": 7, "op": "hello"}\n')
    conn.proc.stdin.flush()
    answer = json.loads(conn._lines.get(timeout=30))
    assert answer["ok"] is False and answer["kind"] == "protocol"


def test_the_cache_keeps_to_its_cap(agent_python, tmp_path):
    from advisor.device.link import link_from_table

    link = link_from_table({"command": [str(agent_python)], "cache_dir": str(tmp_path / "c"),
                            "cache_mb": 0.003}, lambda f, why: ValueError(f"{f} {why}"))
    conn = AgentConnection(link)
    try:
        shas = [conn.ensure_bytes(bytes([i]) * 1200) for i in range(4)]
        have = conn.call("has", blobs=shas)["have"]
        assert shas[-1] in have and len(have) < 4  # 3 KB cap: the oldest went first
        with pytest.raises(DeviceError, match="larger than the agent's cache cap"):
            conn.ensure_bytes(b"q" * 5000)
    finally:
        conn.close()


def _npy(x) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(x, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()
