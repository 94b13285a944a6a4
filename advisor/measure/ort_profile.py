"""ONNX Runtime's profiler events of a few runs of a model: the raw material of per-layer times
(`advisor.measure.onnx_layers` turns them into hot spots).

Torch-free (numpy and onnxruntime only): the device agent runs it on the device itself. Only the
events the hot spots need are kept (each run's `model_run`, each node's `*_kernel_time`), with the
fields they need, so the list stays small enough to send back over the agent's protocol.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def profile_events(path: str | Path, input_shape: tuple[int, ...], threads: int | None,
                   runs: int, warmup: int, provider: str = "CPUExecutionProvider"
                   ) -> list[dict[str, Any]]:
    import numpy as np
    import onnxruntime as ort

    # advisor-ortprof-PID-*: a later run removes it if this process is killed meanwhile
    with tempfile.TemporaryDirectory(prefix=f"advisor-ortprof-{os.getpid()}-") as tmp:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "ort")
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), so, providers=[provider])
        inp = sess.get_inputs()[0]
        x = np.random.default_rng(0).standard_normal(tuple(int(d) for d in input_shape)) \
            .astype(np.float16 if inp.type == "tensor(float16)" else np.float32)
        for _ in range(warmup + runs):
            sess.run(None, {inp.name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    kept = []
    for e in events:
        name = e.get("name", "")
        if (e.get("cat") == "Session" and name == "model_run") or \
                (e.get("cat") == "Node" and name.endswith("_kernel_time")):
            kept.append({"cat": e["cat"], "name": name, "ts": e["ts"], "dur": e["dur"],
                         "op_name": (e.get("args") or {}).get("op_name", "")})
    return kept
