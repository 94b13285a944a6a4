"""Architecture coverage: every zoo model loads in every format, is profiled at 224 px, and every
registered pass either applies with its effect checked or is refused up front with one line.

Run in the vision environment: `.venv-vision/bin/python -m pytest -m zoo` (`scripts/install.sh
vision` builds it). With `ADVISOR_ZOO_TABLE=benchmarks/results/zoo.md` the run also writes the
model × pass table (see tests/zoo/conftest.py). Tests are ordered model by model so that each
model is built and exported once; `-n 2 --dist loadgroup` (pytest-xdist, in the vision
environment) runs two models at a time.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("torchvision", reason="the zoo needs torchvision: scripts/install.sh vision")
pytest.importorskip("timm", reason="the zoo needs timm: scripts/install.sh vision")

from tests.zoo.cases import CASES, SHAPE  # noqa: E402
from tests.zoo.cells import Cell, run_cell  # noqa: E402

pytestmark = pytest.mark.zoo

LOADS = ("load: .pt2 + --arch", "load: state_dict + --arch", "load: factory spec", "load: ONNX")
PASSES = ("prune_structured", "factorize", "int8_static", "int8_dynamic", "weight_only_int8",
          "torch_dynamic_int8", "prune_unstructured", "prune_unstructured_iterative",
          "prune_at_init", "finetune", "distill", "distill_student", "fp16", "bf16")
# the .pt2 alone (plain torch.export.save, no --arch), lifted into layers (advisor.lift), then
# structured pruning on the lifted module
LIFTED = "lifted: .pt2 alone, then prune_structured"
COLUMNS = LOADS + (LIFTED, "profile") + PASSES
MUST_BE_OK_ON_CNNS = ("prune_structured", "int8_static", "factorize", LIFTED)


def test_every_registered_pass_is_covered():
    from advisor.passes.base import load_builtin_passes

    assert set(PASSES) == set(load_builtin_passes())


# one xdist group per model: with `-n 2 --dist loadgroup` each model is built on one worker only
@pytest.mark.parametrize("case,column", [
    pytest.param(c, col, id=f"{c.id}:{col}", marks=pytest.mark.xdist_group(c.id))
    for c in CASES for col in COLUMNS])
def test_zoo(case, column, zoo_model, record_property):
    prepared = zoo_model(case)
    if column in LOADS:
        cell = _guarded(_load_cell, case, column, prepared)
    elif column == LIFTED:
        cell = _guarded(_lifted_cell, prepared)
    elif column == "profile":
        cell = _guarded(_profile_cell, prepared)
    else:
        cell = run_cell(column, prepared.model, prepared.onnx, prepared.work / column,
                        prepared.data)
    record_property("zoo_cell", {"model": case.id, "column": column, "status": cell.status,
                                 "text": cell.text, "seconds": round(cell.seconds, 1)})
    assert cell.status != "failed", f"{case.id} × {column}: {cell.text}"
    if column in case.known_refusals:
        assert cell.status == "refused" and case.known_refusals[column] in cell.text, cell.text
    elif case.cnn and column in MUST_BE_OK_ON_CNNS:
        assert cell.status == "ok", f"{case.id} × {column} must apply on a CNN: {cell.text}"


def _guarded(fn, *args) -> Cell:
    """`fn(*args)`, with any exception recorded as a failed cell (the table stays complete)."""
    import time

    from tests.zoo.cells import failed_cell

    started = time.perf_counter()
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001
        return failed_cell(e, started)


def _load_cell(case, column, prepared) -> Cell:
    import time

    from advisor.model_io import load_model

    started = time.perf_counter()
    kw = {"arch_kwargs": case.kwargs or None}
    x = torch.randn(2, *SHAPE[1:], generator=torch.Generator().manual_seed(2))
    if column == "load: .pt2 + --arch":
        loaded = load_model(str(prepared.pt2), arch=case.arch, **kw)
    elif column == "load: state_dict + --arch":
        loaded = load_model(str(prepared.state_dict), arch=case.arch, input_shape=SHAPE, **kw)
    elif column == "load: factory spec":
        loaded = load_model(case.arch, input_shape=SHAPE, **kw)
    else:
        loaded = load_model(str(prepared.onnx))
    if column == "load: ONNX":
        from advisor.export import onnx_session, run_onnx

        out = torch.from_numpy(run_onnx(onnx_session(loaded.onnx_path), x))
    else:
        assert loaded.editable, f"{column}: the module is not editable"
        with torch.inference_mode():
            out = loaded.module.eval()(x)
    with torch.inference_mode():
        ref = prepared.model(x)
    assert out.shape == ref.shape, f"{column}: output {tuple(out.shape)} != {tuple(ref.shape)}"
    if column != "load: factory spec":  # the factory builds its own random weights
        err = float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
        assert err < 1e-3, f"{column}: outputs differ from the original by {err:.2e}"
        text = f"{loaded.format}, outputs equal ({err:.0e})"
    else:
        text = f"{loaded.format}, editable"
    return Cell("ok", text, time.perf_counter() - started)


def _lifted_cell(prepared) -> Cell:
    """The plain .pt2 lifted into layers: its outputs equal the original's (1e-5, at another
    batch size too), then structured pruning applies to it as to the eager model."""
    import time

    from advisor.model_io import load_model
    from tests.zoo.cells import failed_cell

    started = time.perf_counter()
    loaded = load_model(str(prepared.pt2))
    if not loaded.metadata.get("lifted"):
        return Cell("refused", f"not lifted: {loaded.metadata.get('lift_refused')}",
                    time.perf_counter() - started)
    x = torch.randn(2, *SHAPE[1:], generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        out, ref = loaded.module.eval()(x), prepared.model(x)
    err = float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
    if out.shape != ref.shape or err > 1e-5:
        return failed_cell(AssertionError(f"lifted outputs differ by {err:.2e}"), started)
    layers = sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.BatchNorm2d))
                 for m in loaded.module.modules())
    pruned = run_cell("prune_structured", loaded.module, prepared.onnx,
                      prepared.work / "lifted", prepared.data)
    return Cell(pruned.status, f"{layers} layers lifted, outputs equal ({err:.0e}); "
                               f"prune_structured: {pruned.text}", time.perf_counter() - started)


def _profile_cell(prepared) -> Cell:
    import time

    from advisor.api import profile

    started = time.perf_counter()
    prof = profile(str(prepared.pt2), arch=prepared.case.arch,
                   arch_kwargs=prepared.case.kwargs or None, target="cpu", progress=False,
                   processes=1, warmup=1, repeats=3, max_seconds=2.0, hotspot_runs=1,
                   workdir=prepared.work / "profile")
    p50 = {rt: r.get("p50") for rt, r in prof.runtimes.items() if r.get("status") == "ok"}
    assert p50 and all(v and v > 0 for v in p50.values()), f"no latency measured: {prof.runtimes}"
    assert prof.flops and prof.flops > 0 and prof.params, "FLOPs/params missing"
    assert prof.hotspots is not None and prof.hotspots.layers, "no hot spots"
    lat = ", ".join(f"{rt} {v:.0f} ms" for rt, v in sorted(p50.items()))
    return Cell("ok", f"{lat}; {prof.flops / 1e9:.2f} GMAC; top layer "
                      f"{prof.hotspots.layers[0].name}", time.perf_counter() - started)
