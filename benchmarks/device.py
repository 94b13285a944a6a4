"""Benchmark: measuring on a device through advisor's agent, over real SSH (an sshd on 127.0.0.1
started for the run, as the tests do), against the same measurements made locally.

1. `analyze` of the digits ResNet example (`--retrain none`, validation + held-out data) on the
   local `cpu` target and on a target written by `advisor targets probe` over SSH, in one run:
   choice, speed-up and its interval, held-out drop, wall time.
2. Faults over SSH (`tests/device/fault_proxy.py` on the device side of the connection): the
   connection dropped, the agent killed, the device's worker OOM-killed, a truncated upload, a
   protocol mismatch — what the failed trial says and whether the analysis went on.
3. Overhead per measurement: connecting (first time: the agent is pushed; later: found in the
   cache), one request's round trip, one latency measurement over SSH against the same request
   made locally, uploads, and outputs for the accuracy (256 images).

The "device" is this host (a loopback SSH), so the figures are the protocol's and SSH's cost,
not a network's: over Wi-Fi to a Raspberry Pi add its round-trip time per request.

    .venv/bin/python benchmarks/device.py [--skip-faults]

Writes benchmarks/results/device.{json,md}.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import ensure_examples, markdown_table, record  # noqa: E402

AGENT_PYTHON = ROOT / ".venv-agent" / "bin" / "python"
PROXY = ROOT / "tests" / "device" / "fault_proxy.py"


def _module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _analyze(model: Path, target: str, data: Path, out: Path, extra=()) -> dict:
    from advisor.cli import main

    t0 = time.perf_counter()
    rc = main(["analyze", str(model), "--target", target, "--max-drop", "1%",
               "--retrain", "none", "--data", str(data / "digits-val.pt"),
               "--test-data", str(data / "digits-test.pt"), "--out", str(out), *extra])
    wall = time.perf_counter() - t0
    if rc != 0:
        return {"rc": rc, "wall_s": wall}
    r = json.loads((out / "report.json").read_text())
    ch = r.get("chosen") or {}
    m = ch.get("measured") or {}
    tried = [c for c in r["candidates"] if c["status"] in ("ok", "failed")]
    return {"rc": rc, "wall_s": round(wall, 1), "chosen": ch.get("name"),
            "speedup": m.get("speedup"), "interval": m.get("speedup_range"),
            "drop_test": ch.get("accuracy_drop_test"),
            "trials": len(tried), "failed": [(c["name"], c.get("error")) for c in tried
                                             if c["status"] == "failed"],
            "ok_after_failure": _ok_after(tried),
            "measured_on": (r["target"].get("measured_on") or {}).get("how")}


def _one_thread(probed: Path, work: Path) -> dict[str, Path]:
    """1-thread copies of the local `cpu` target (ONNX Runtime only, as the probed one) and of
    the probed target."""
    from advisor.targets import PROFILES_DIR, load_target

    local, ssh = work / "cpu-1.toml", work / "loop-1.toml"
    local.write_text((PROFILES_DIR / "cpu.toml").read_text()
                     .replace('name = "cpu"', 'name = "cpu-1"\nthreads = 1')
                     .split('[[runtimes]]\nname = "torch"')[0])
    ssh.write_text(probed.read_text().replace(f"threads = {load_target(probed).threads}\n",
                                              "threads = 1\n"))
    return {"local": local, "ssh": ssh}


def _ok_after(tried: list[dict]) -> int | None:
    idx = [i for i, c in enumerate(tried) if c["status"] == "failed"]
    if not idx:
        return None
    return sum(1 for c in tried[idx[0] + 1:] if c["status"] == "ok")


def _median_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def overhead(ssh_argv: list[str], work: Path, model_onnx: Path) -> list[dict]:
    import numpy as np

    from advisor.device.connection import AgentConnection, forget
    from advisor.device.link import link_from_table
    from advisor.measure.latency import measure_latency
    from advisor.targets import validate_profile

    def bad(field, why):
        return ValueError(f"{field} {why}")

    rows = []
    links = {"local command": [str(AGENT_PYTHON)],
             "SSH (loopback)": ssh_argv + [str(AGENT_PYTHON)]}
    request = dict(repeats=50, warmup=5, max_seconds=0.05)
    local_measure = _median_ms(lambda: measure_latency(model_onnx, "onnxruntime", (1, 3, 32, 32),
                                                       threads=1, **request), 7)
    for label, argv in links.items():
        cache = work / f"cache-{len(rows)}"
        table = {"command": argv, "cache_dir": str(cache)}
        link = link_from_table(table, bad)
        t0 = time.perf_counter()
        AgentConnection(link).close()
        first = (time.perf_counter() - t0) * 1e3
        again = _median_ms(lambda: AgentConnection(link).close(), 5)
        conn = AgentConnection(link)
        rtt = _median_ms(lambda: conn.call("hello"), 50)
        blob = np.random.default_rng(0).bytes(16 * 2 ** 20)
        t0 = time.perf_counter()
        conn.ensure_bytes(blob)
        upload_mb_s = 16 / (time.perf_counter() - t0)
        conn.close()
        target = validate_profile({"name": "dev", "precisions": ["fp32"], "threads": 1,
                                   "device": table, "runtimes": [{"name": "onnxruntime"}]},
                                  work / "dev.toml")
        measure_latency(model_onnx, "onnxruntime", (1, 3, 32, 32), target=target, **request)
        remote = _median_ms(lambda: measure_latency(model_onnx, "onnxruntime", (1, 3, 32, 32),
                                                    target=target, **request), 7)
        from advisor.measure.accuracy import artifact_predictor
        x = np.random.default_rng(1).standard_normal((256, 3, 32, 32)).astype(np.float32)
        predict = artifact_predictor(model_onnx, "onnxruntime", target)
        first_batch = _median_ms(lambda: predict(x), 1)
        cached_batch = _median_ms(lambda: predict(x), 5)
        forget(target.link)
        rows.append({"link": label, "connect_first_ms": round(first, 1),
                     "connect_cached_ms": round(again, 1), "round_trip_ms": round(rtt, 3),
                     "measure_ms": round(remote, 1), "local_measure_ms": round(local_measure, 1),
                     "overhead_per_measurement_ms": round(remote - local_measure, 1),
                     "upload_mb_s": round(upload_mb_s, 1),
                     "outputs_256_first_ms": round(first_batch, 1),
                     "outputs_256_cached_ms": round(cached_batch, 1)})
    return rows


def faults(ssh_argv: list[str], model: Path, data: Path, work: Path) -> list[dict]:
    from advisor.device.connection import AgentConnection
    from advisor.device.link import link_from_table

    cache = work / "fault-cache"
    rows = []
    for mode in ("drop", "kill", "oom", "truncate", "version"):
        d = work / f"fault-{mode}"
        d.mkdir()
        cache = d / "cache"
        AgentConnection(link_from_table({"command": [str(AGENT_PYTHON)],
                                         "cache_dir": str(cache)},
                                        lambda f, w: ValueError(f + w))).close()
        argv = ssh_argv + [str(AGENT_PYTHON), str(PROXY), mode, str(d / "state"), "--",
                           str(AGENT_PYTHON)]
        toml = d / "faulty.toml"
        toml.write_text("name = \"faulty\"\nprecisions = [\"fp32\", \"int8\"]\nthreads = 1\n"
                        f"[device]\ncommand = {json.dumps(argv)}\ncache_dir = "
                        f"{json.dumps(str(cache))}\n[[runtimes]]\nname = \"onnxruntime\"\n")
        res = _analyze(model, str(toml), data, d / "out", ["--max-trials", "3"])
        res["mode"] = mode
        res["fired"] = (d / "state" / "fired").exists()
        rows.append(res)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-faults", action="store_true")
    args = ap.parse_args()
    sshd_mod = _module(ROOT / "tests" / "device" / "loopback_sshd.py")
    data = ensure_examples(("resnet",))
    model = data / "resnet.pt2"
    with tempfile.TemporaryDirectory(prefix="advisor-bench-device-") as tmp:
        work = Path(tmp)
        ssh_argv, proc = sshd_mod.start_sshd(work / "sshd")
        try:
            from advisor.cli import main as cli
            probed = work / "loop.toml"
            assert cli(["targets", "probe", "--command", shlex.join(ssh_argv + [str(AGENT_PYTHON)]),
                        "--name", "loop", "--out", str(probed), "--cache-dir",
                        str(work / "agent-cache")]) == 0
            one = _one_thread(probed, work)
            runs = {}
            # alternated, twice at the probed 2 threads, so drift hits both sides alike; then
            # once more at 1 thread (a 2-thread pool on 2 cores stalls when anything else runs)
            for i in (1, 2):
                runs[f"local cpu (run {i})"] = _analyze(model, "cpu", data, work / f"local{i}")
                runs[f"probed, over SSH (run {i})"] = _analyze(model, str(probed), data,
                                                               work / f"ssh{i}")
            runs["local cpu, 1 thread"] = _analyze(model, str(one["local"]), data, work / "l1")
            runs["probed, over SSH, 1 thread"] = _analyze(model, str(one["ssh"]), data,
                                                          work / "s1")
            from advisor.export import export_onnx
            from advisor.model_io import load_model
            onnx_path = work / "resnet.onnx"
            export_onnx(load_model(model).module, onnx_path, (1, 3, 32, 32))
            over = overhead(ssh_argv, work, onnx_path)
            fault_rows = [] if args.skip_faults else faults(ssh_argv, model, data, work)
            probed_text = probed.read_text()
        finally:
            sshd_mod.stop_sshd(proc)
    md = ["# Measuring on the device over SSH (`benchmarks/device.py`)", "",
          "The device is this host reached over a loopback SSH (an sshd on 127.0.0.1 with "
          "per-run keys); the agent runs in `.venv-agent` (onnxruntime, numpy, psutil; no "
          "torch, no advisor: the agent was pushed by advisor).", "",
          "## analyze: local `cpu` target vs the probed target, same run", "",
          "Runs alternate (local, SSH, local, SSH) at the probed 2 threads, then one pair at 1 "
          "thread (local: `cpu` with `threads = 1` and ONNX Runtime only, so both offer the "
          "same candidates; the tests compare this pair).", "",
          markdown_table(["target", "measured", "choice", "speed-up", "interval",
                          "held-out drop (pts)", "trials", "wall s"],
                         [[k, v.get("measured_on") or "this host", v.get("chosen"),
                           v.get("speedup"), v.get("interval") and
                           f"{v['interval'][0]:.2f}–{v['interval'][1]:.2f}",
                           v.get("drop_test"), v.get("trials"), v.get("wall_s")]
                          for k, v in runs.items()]), "",
          "## the probed profile", "", "```toml", probed_text.rstrip(), "```", "",
          "## overhead per measurement", "",
          markdown_table(["link", "connect, first (push) ms", "connect, cached ms",
                          "round trip ms", "one measurement ms", "same, locally ms",
                          "overhead ms", "upload MB/s", "outputs of 256 images, first ms",
                          "again (inputs cached) ms"],
                         [[r["link"], r["connect_first_ms"], r["connect_cached_ms"],
                           r["round_trip_ms"], r["measure_ms"], r["local_measure_ms"],
                           r["overhead_per_measurement_ms"], r["upload_mb_s"],
                           r["outputs_256_first_ms"], r["outputs_256_cached_ms"]]
                          for r in over]), "",
          "One measurement: `measure_latency` of the digits ResNet's ONNX file (5 warm-up and "
          "50 timed calls, `max_seconds` 0.05), wall time of the whole call, median of 7; most "
          "of it is starting the fresh worker process and loading the model, either way. "
          "Overhead = over the link minus the same call locally. Round trip: one `hello` "
          "request and its answer, median of 50. Connect: starting `ssh` (or the local "
          "command), the bootstrap, and `hello`."]
    if fault_rows:
        md += ["", "## faults over SSH", "",
               markdown_table(["fault", "happened", "analysis exit", "failed trial: reason",
                               "trials ok after it", "choice"],
                              [[r["mode"], "yes" if r["fired"] else "no", r["rc"],
                                "; ".join(f"{n}: {(e or '')[:160]}" for n, e in
                                          r.get("failed") or []) or "none",
                                r.get("ok_after_failure"), r.get("chosen")]
                               for r in fault_rows])]
    record("device", {"runs": runs, "overhead": over, "faults": fault_rows,
                      "probed_toml": probed_text}, "\n".join(md))


if __name__ == "__main__":
    main()
