"""Latency: fresh worker process, explicit threads/affinity/allocator settings, sane statistics,
clear errors, and the emulated memory budget."""
from __future__ import annotations

import os

import pytest

from advisor.measure.latency import ALLOCATOR_ENV, LatencyError, measure_latency, summarise
from advisor.measure.timer import time_inprocess
from advisor.targets import load_target


def test_summarise_statistics():
    s = summarise([float(x) for x in range(1, 11)], warmup=0, batch_size=2, runtime="torch")
    assert s.p50 == pytest.approx(5.5) and s.p90 == pytest.approx(9.1)
    assert s.min == 1.0 and s.mean == pytest.approx(5.5) and s.runs == 10
    assert s.cv == pytest.approx(s.std / s.mean) and s.per_item_ms == pytest.approx(2.75)


def test_onnxruntime_worker_is_isolated_and_honours_the_target(tiny_artifacts, one_thread_target):
    s = measure_latency(tiny_artifacts["onnx"], "onnxruntime", tiny_artifacts["shape"],
                        target=one_thread_target, warmup=3, repeats=20, max_seconds=2.0)
    assert 0 < s.min <= s.p50 <= s.p90 and s.cv >= 0 and s.runs >= 20
    assert len(s.samples_ms) == s.runs and s.warmup >= 1
    assert s.pid is not None and s.pid != os.getpid()  # a separate process
    assert s.threads == 1 and s.runtime_threads == 1
    assert s.affinity is not None and len(s.affinity) == 1
    for key, value in {**ALLOCATOR_ENV, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}.items():
        assert s.env[key] == value  # as seen inside the worker
    assert s.provider == "CPUExecutionProvider" and s.runtime == "onnxruntime"
    assert s.peak_rss_mb > 0 and s.baseline_rss_mb > 0 and not s.emulated
    assert s.host["cores_available"] >= 1


def test_torch_worker_reports_its_thread_count(tiny_artifacts):
    cores = len(os.sched_getaffinity(0))
    threads = min(2, cores)
    s = measure_latency(tiny_artifacts["pt2"], "torch", tiny_artifacts["shape"], threads=threads,
                        batch_size=3, warmup=2, repeats=5, max_seconds=1.0)
    assert s.runtime_threads == threads  # torch.get_num_threads() inside the worker
    assert len(s.affinity) == threads and s.env["OMP_NUM_THREADS"] == str(threads)
    assert s.batch_size == 3 and s.p50 <= s.p90 and s.pid != os.getpid()
    assert s.timer == "perf_counter" and s.device == "cpu"


def test_worker_errors_are_one_line(tmp_path, one_thread_target):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(LatencyError) as e:
        measure_latency(bad, "onnxruntime", (1, 3, 8, 8), target=one_thread_target, repeats=2)
    assert "broken.onnx" in e.value.message and "\n" not in e.value.message
    assert e.value.kind == "error"


def test_fixed_batch_is_reported(tmp_path, tiny_model, one_thread_target):
    from advisor.export import export_onnx

    path = export_onnx(tiny_model, tmp_path / "static.onnx", (1, 3, 16, 16),
                       dynamic_batch=False)["path"]
    with pytest.raises(LatencyError, match="fixed batch of 1"):
        measure_latency(path, "onnxruntime", (1, 3, 16, 16), target=one_thread_target,
                        batch_size=4, repeats=2)


def test_emulated_memory_budget_is_enforced(tmp_path, write_toml):
    from torch import nn

    from advisor.export import export_onnx

    big = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.Conv2d(64, 64, 3, padding=1)).eval()
    path = export_onnx(big, tmp_path / "big.onnx", (1, 3, 128, 128), check=False)["path"]
    t = load_target(write_toml('name = "tiny"\ndevice = "cpu"\nthreads = 1\n'
                               'memory_budget_mb = 4\nprecisions = ["fp32"]\nemulated = true\n'
                               '[[runtimes]]\nname = "onnxruntime"\n'))
    with pytest.raises(LatencyError) as e:
        measure_latency(path, "onnxruntime", (1, 3, 128, 128), target=t, batch_size=8, repeats=2)
    assert e.value.kind == "memory" and "4 MB budget" in e.value.message


def test_invalid_settings_and_missing_file(tiny_artifacts, tmp_path):
    with pytest.raises(LatencyError, match="no model file"):
        measure_latency(tmp_path / "none.onnx", "onnxruntime", (1, 3, 8, 8))
    with pytest.raises(LatencyError, match="invalid measurement settings"):
        measure_latency(tiny_artifacts["onnx"], "onnxruntime", (1, 3, 16, 16), repeats=0)


def test_time_inprocess_micro_benchmark():
    import torch

    layer = torch.nn.Linear(64, 64)
    x = torch.randn(8, 64)
    s = time_inprocess(lambda: layer(x), warmup=2, repeats=15, max_seconds=1.0)
    assert s.runtime == "inprocess" and 3 <= s.runs <= 15
    assert 0 < s.min <= s.p50 <= s.p90 and s.pid == os.getpid()


def test_several_processes_pool_their_samples(tiny_artifacts, one_thread_target):
    s = measure_latency(tiny_artifacts["onnx"], "onnxruntime", tiny_artifacts["shape"],
                        target=one_thread_target, warmup=2, repeats=7, processes=3)
    assert len(s.process_p50s) == 3 and s.runs >= 21
    # the median worker, robust to one slow one (process_p50s are rounded to 4 decimals)
    assert s.p50 == pytest.approx(sorted(s.process_p50s)[1], abs=1e-4)
    assert s.pooled_p50 is not None
    assert min(s.process_p50s) - 1e-4 <= s.pooled_p50 <= max(s.process_p50s) + 1e-4
    with pytest.raises(LatencyError):
        measure_latency(tiny_artifacts["onnx"], "onnxruntime", tiny_artifacts["shape"],
                        processes=0)


def test_paired_timing_ranks_a_heavier_reference_slower(tiny_artifacts, one_thread_target,
                                                        tmp_path):
    import torch

    from advisor.export import export_onnx
    from advisor.measure.latency import measure_speedup

    shape = tiny_artifacts["shape"]
    heavy = torch.nn.Sequential(torch.nn.Conv2d(shape[1], 64, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(64, 64, 3, padding=1)).eval()
    heavy_path = export_onnx(heavy, tmp_path / "heavy.onnx", shape)["path"]
    same = measure_speedup(tiny_artifacts["onnx"], tiny_artifacts["onnx"], "onnxruntime", shape,
                           target=one_thread_target, repeats=60, max_seconds=1.0)
    assert 0.6 < same.speedup < 1.6 and same.runs >= 15
    faster = measure_speedup(tiny_artifacts["onnx"], heavy_path, "onnxruntime", shape,
                             target=one_thread_target, repeats=60, max_seconds=1.0)
    assert faster.speedup > 2.0  # the tiny net is far cheaper than the 64-channel stack
    assert faster.reference_p50 > faster.p50 > 0
    with pytest.raises(LatencyError):
        measure_speedup(tmp_path / "missing.onnx", heavy_path, "onnxruntime", shape)


def test_timing_spans_a_minimum_time_even_for_few_repeats(tiny_artifacts, one_thread_target):
    s = measure_latency(tiny_artifacts["onnx"], "onnxruntime", tiny_artifacts["shape"],
                        target=one_thread_target, warmup=1, repeats=1, max_seconds=1.0)
    # one repeat asked, but a sub-millisecond model is sampled for ~0.5 s, not for one call
    assert s.runs > 50 and sum(s.samples_ms) > 300
