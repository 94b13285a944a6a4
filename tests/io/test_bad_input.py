"""Bad input is refused up front with a one-line error and a hint (exit 2): never an internal
error, a silent pass or a runaway. Each test also proves the refusal comes BEFORE the expensive
work: the measurement (or the model loader) is replaced by a tripwire that fails the test."""
from __future__ import annotations

import json
import math
import os
import sys

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from advisor.cli import main
from advisor.errors import AdvisorError, DataError, FactorError, InputShapeError, TargetError

X = torch.rand(20, 3, 32, 32, generator=torch.Generator().manual_seed(0))
Y = torch.arange(20) % 10


class Tripwire(Exception):
    pass


@pytest.fixture
def no_measure(monkeypatch):
    """profile_model / measure_latency raise: a check that fires after them is too late."""
    import advisor.measure.latency
    import advisor.measure.profile

    def trip(*a, **k):
        raise Tripwire("the expensive measurement started before the input was checked")
    monkeypatch.setattr(advisor.measure.profile, "profile_model", trip)
    monkeypatch.setattr(advisor.measure.latency, "measure_latency", trip)


@pytest.fixture
def no_load(monkeypatch):
    import advisor.model_io

    def trip(*a, **k):
        raise Tripwire("the model loader ran before the input was checked")
    monkeypatch.setattr(advisor.model_io, "load_model", trip)


def _save(tmp_path, name, x=X, y=Y):
    f = tmp_path / name
    torch.save({"inputs": x, "labels": y} if y is not None else {"inputs": x}, f)
    return f


def _cli(args, capsys):
    rc = main(args)
    err = capsys.readouterr().err
    return rc, err


# ---- labels outside the model's classes, non-finite inputs ------------------------------------

def test_labels_beyond_the_model_classes_are_refused(artefacts, tmp_path, capsys, no_measure):
    data = _save(tmp_path, "val.pt", y=100 + Y)  # 100..109 for a 10-class model
    rc, err = _cli(["analyze", str(artefacts["pt2"]), "--data", str(data)], capsys)
    assert rc == 2, err
    assert "labels range 100..109 but the model outputs 10 classes (0..9)" in err
    assert "hint:" in err and "map" in err and "internal error" not in err


@pytest.mark.parametrize("flag", ["--test-data", "--train-data"])
def test_labels_beyond_classes_in_other_splits(artefacts, tmp_path, capsys, no_measure, flag):
    good = _save(tmp_path, "val.pt")
    bad = _save(tmp_path, "other.pt", y=Y + 5)  # 5..14
    rc, err = _cli(["analyze", str(artefacts["pt2"]), "--data", str(good), flag, str(bad)],
                   capsys)
    assert rc == 2 and "labels range 5..14 but the model outputs 10 classes" in err
    assert flag in err


def test_negative_labels_of_an_in_memory_loader_are_refused(reference, no_measure):
    from advisor.api import analyze

    loader = DataLoader(TensorDataset(X, -1 - Y), batch_size=8)
    with pytest.raises(DataError, match="negative"):
        analyze(reference, input_shape=(1, 3, 32, 32), data=loader, progress=False)


def test_in_memory_labels_beyond_classes_are_refused(reference, no_measure):
    from advisor.api import analyze

    loader = DataLoader(TensorDataset(X, Y + 10), batch_size=8)
    with pytest.raises(DataError, match=r"labels range 10\.\.19 but the model outputs 10"):
        analyze(reference, input_shape=(1, 3, 32, 32), data=loader, progress=False)


def test_labels_of_a_hook_dataset_are_checked(tmp_path, monkeypatch):
    from advisor.data import load_data
    from advisor.data_checks import check_labels

    (tmp_path / "bad_input_hooks.py").write_text(
        "import torch\nfrom torch.utils.data import Dataset\n"
        "class D(Dataset):\n"
        "    def __len__(self): return 6\n"
        "    def __getitem__(self, i): return torch.zeros(3, 4, 4), 40 + i\n"
        "def data(): return D()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        loader = load_data("bad_input_hooks:data", batch_size=4)
        with pytest.raises(DataError, match=r"labels range 40\.\.45 but the model outputs 10"):
            check_labels({"--data": loader}, 10)
    finally:
        sys.modules.pop("bad_input_hooks", None)


def test_synthetic_calibration_labels_are_not_refused():
    from advisor.data_checks import check_labels, label_range

    calib = DataLoader(TensorDataset(X, torch.full((len(X),), -1)), batch_size=32)
    assert label_range(calib) is None
    check_labels({"calib": calib}, 10)  # unlabelled (-1) is not a class index: nothing to check


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("flag", ["--data", "--test-data", "--train-data"])
def test_non_finite_inputs_are_refused(artefacts, tmp_path, capsys, no_measure, flag, value):
    x = X.clone()
    x[3, 0, 1, 1] = value
    bad = _save(tmp_path, "bad.pt", x=x)
    args = ["analyze", str(artefacts["pt2"])]
    if flag != "--data":
        args += ["--data", str(_save(tmp_path, "val.pt"))]
    rc, err = _cli(args + [flag, str(bad)], capsys)
    assert rc == 2, err
    assert "non-finite" in err and "sample 3" in err and "internal error" not in err


def test_non_finite_inputs_in_npz_and_hook_batches(tmp_path, monkeypatch):
    import numpy as np

    from advisor.data import load_data
    from advisor.data_checks import label_range

    f = tmp_path / "d.npz"
    x = X.numpy().copy()
    x[0, 0, 0, 0] = np.nan
    np.savez(f, inputs=x, labels=Y.numpy())
    with pytest.raises(DataError, match="non-finite"):
        load_data(str(f))
    (tmp_path / "nan_hooks.py").write_text(
        "import torch\nfrom torch.utils.data import DataLoader, TensorDataset\n"
        "x = torch.zeros(8, 3, 4, 4); x[6] = float('nan')\n"
        "def loader(): return DataLoader(TensorDataset(x, torch.zeros(8, dtype=torch.long)),"
        " batch_size=4)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        loader = load_data("nan_hooks:loader")  # the first batch is fine, the second is not
        with pytest.raises(DataError, match="non-finite"):
            label_range(loader)  # the up-front pass analyze makes over hook data
    finally:
        sys.modules.pop("nan_hooks", None)


# ---- target TOML: threads, memory budget ---------------------------------------------------

def _toml(tmp_path, extra):
    f = tmp_path / "t.toml"
    f.write_text('name = "t"\ndevice = "cpu"\nprecisions = ["fp32"]\n' + extra +
                 '\n[[runtimes]]\nname = "torch"\n')
    return f


def test_threads_beyond_usable_cores_are_refused(tmp_path):
    from advisor.targets import load_target, usable_cores

    cores = len(os.sched_getaffinity(0))
    assert usable_cores() == cores
    assert load_target(_toml(tmp_path, f"threads = {cores}")).threads == cores
    for n in (cores + 1, 100000):
        with pytest.raises(TargetError, match=rf"threads = {n} but this process may use only "
                                              rf"{cores} core"):
            load_target(_toml(tmp_path, f"threads = {n}"))


def test_threads_100000_in_cli_is_one_line_error(tmp_path, capsys, no_measure, no_load):
    rc, err = _cli(["profile", "advisor.examples.models:resnet", "--target",
                    str(_toml(tmp_path, "threads = 100000"))], capsys)
    assert rc == 2 and "threads = 100000" in err and "hint:" in err


@pytest.mark.parametrize("value", ["nan", "inf", "+inf", "-inf", "-5", "0", "0.0", "true",
                                   '"512"'])
def test_memory_budget_must_be_positive_and_finite(tmp_path, value):
    from advisor.targets import load_target

    with pytest.raises(TargetError, match="memory_budget_mb"):
        load_target(_toml(tmp_path, f"memory_budget_mb = {value}"))


def test_memory_budget_valid_values(tmp_path):
    from advisor.targets import load_target

    assert load_target(_toml(tmp_path, "memory_budget_mb = 256")).memory_budget_mb == 256.0
    assert load_target(_toml(tmp_path, "memory_budget_mb = 0.5")).memory_budget_mb == 0.5


# ---- output paths that cannot be written -------------------------------------------------------

def _unwritable_dirs(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    return [tmp_path / "file.txt", tmp_path / "file.txt" / "sub", "/proc/xyz",
            "/proc/xyz/deeper"]


def test_check_writable_dir(tmp_path):
    from advisor.errors import OutputError
    from advisor.fileio import check_writable_dir

    for bad in _unwritable_dirs(tmp_path):
        with pytest.raises(OutputError):
            check_writable_dir(bad)
    assert check_writable_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # the check creates nothing
    assert list(tmp_path.iterdir()) == [tmp_path / "file.txt"]  # and leaves no probe file


def test_check_writable_file(tmp_path):
    from advisor.errors import OutputError
    from advisor.fileio import check_writable_file

    (tmp_path / "file.txt").write_text("x")
    for bad in (tmp_path, tmp_path / "file.txt" / "p.json", "/proc/xyz/p.json"):
        with pytest.raises(OutputError):
            check_writable_file(bad)
    check_writable_file(tmp_path / "p.json")
    check_writable_file(tmp_path / "file.txt")  # replacing an existing file is fine


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root may write into a 0555 directory: the check cannot fail")
def test_check_writable_dir_read_only(tmp_path):
    from advisor.errors import OutputError
    from advisor.fileio import check_writable_dir, check_writable_file

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="not writable"):
            check_writable_dir(ro)
        with pytest.raises(OutputError, match="not writable"):
            check_writable_file(ro / "p.json")
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("where", ["/proc/xyz/p.json", "file.txt/sub/p.json", "dir"])
def test_profile_json_unwritable_fails_before_measuring(tmp_path, capsys, no_measure, where,
                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "dir").mkdir()
    rc, err = _cli(["profile", "advisor.examples.models:resnet", "--input-shape", "1,3,32,32",
                    "--json", where], capsys)
    assert rc == 2, err
    assert "--json" in err and "Tripwire" not in err and "internal error" not in err


# ---- absurd input shapes -------------------------------------------------------------------

def test_check_input_size():
    from advisor.data_checks import check_input_size

    check_input_size("1,3,224,224")
    check_input_size((1, 3, 224, 224), batch_size=64)
    check_input_size(None)
    with pytest.raises(InputShapeError, match="elements"):
        check_input_size("1,3,100000,100000")
    with pytest.raises(InputShapeError, match="elements"):
        check_input_size((1, 3, 224, 224), batch_size=10 ** 6)
    with pytest.raises(InputShapeError):
        check_input_size("1,3,-4,4")  # parse errors are InputShapeErrors too


@pytest.mark.parametrize("cmd", [["profile"], ["analyze"]])
def test_absurd_input_shape_fails_before_loading(artefacts, capsys, no_load, no_measure, cmd):
    rc, err = _cli(cmd + [str(artefacts["state_dict"]), "--arch",
                          "advisor.examples.models:resnet", "--input-shape",
                          "1,3,100000,100000"], capsys)
    assert rc == 2, err
    assert "1,3,100000,100000" in err and "elements" in err


def test_profile_batch_size_times_shape_is_bounded(capsys, no_load, no_measure):
    rc, err = _cli(["profile", "advisor.examples.models:resnet", "--input-shape", "1,3,224,224",
                    "--batch-size", "1000000"], capsys)
    assert rc == 2 and "1000000,3,224,224" in err


# ---- option ranges -------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["--max-trials", "-1"], ["--max-trials", "0"],
                                  ["--repeats", "0"], ["--repeats", "-3"]])
def test_analyze_option_ranges(artefacts, capsys, no_measure, args):
    rc = main(["analyze", str(artefacts["pt2"])] + args)
    out = capsys.readouterr()
    assert rc == 2, out
    assert args[0] in out.err + out.out and "Tripwire" not in out.err


@pytest.mark.parametrize("kw", [{"max_trials": 0}, {"max_trials": -1},
                                {"measure": {"repeats": 0}}, {"measure": {"max_seconds": 0}}])
def test_analyze_library_limits(no_load, no_measure, kw):
    from advisor.api import analyze

    with pytest.raises(FactorError):
        analyze("model.pt2", progress=False, **kw)


# ---- --from-profile -----------------------------------------------------------------------

@pytest.mark.parametrize("content,match", [
    (None, "does not exist"),
    ("{nope", "JSON"),
    ('{"kind": "x"}', "missing"),
    ("[1, 2]", "not a profile"),
])
def test_from_profile_checked_before_the_baseline(artefacts, tmp_path, capsys, no_measure,
                                                  content, match):
    f = tmp_path / "device.json"
    if content is not None:
        f.write_text(content)
    rc, err = _cli(["analyze", str(artefacts["pt2"]), "--from-profile", str(f)], capsys)
    assert rc == 2, err
    assert match in err and "Tripwire" not in err


def test_from_profile_odd_value_types_are_a_target_error(tmp_path, no_measure, no_load):
    from advisor.api import _device_profile

    f = tmp_path / "device.json"
    f.write_text(json.dumps({"schema_version": 1, "kind": "advisor-profile", "model": {},
                             "target": {}, "host": {}, "runtime": "torch",
                             "latency_ms": {}, "runtimes": {"torch": 5}, "size_mb": 1.0}))
    with pytest.raises(TargetError):
        _device_profile(f)


# ---- plan files: value types end in a PlanError, not an internal error ------------------------

def _plan(tmp_path, mutate):
    from advisor.decide.plan import Plan, Step

    d = Plan("p", [Step("int8_static", {"calibration": "minmax"})]).to_json()
    mutate(d)
    f = tmp_path / "plan.json"
    f.write_text(json.dumps(d))
    return f


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d["steps"][0]["config"].update(calibration=12345), "step 1 (int8_static)"),
    (lambda d: d["steps"][0]["config"].update(num_samples="many"), "'num_samples'"),
    (lambda d: d["steps"][0]["config"].update(bogus=1), "unknown field"),
    (lambda d: d["steps"][0].update(config=[1, 2]), "'config' must be an object"),
    (lambda d: d.update(seed="abc"), "'seed' must be an integer"),
    (lambda d: d.update(factors="x"), "'factors' must be an object"),
    (lambda d: d.update(steps="x"), "'steps' must be a list"),
    (lambda d: d.update(data=[1]), "'data' must be an object"),
])
def test_apply_bad_plan_values_are_plan_errors(artefacts, tmp_path, capsys, no_measure, mutate,
                                               match):
    plan = _plan(tmp_path, mutate)
    rc, err = _cli(["apply", str(artefacts["pt2"]), "--plan", str(plan), "--out",
                    str(tmp_path / "out")], capsys)
    assert rc == 2, err
    assert match in err and "internal error" not in err and "Tripwire" not in err


# ---- data paths in plan.json: absolute, with content hashes --------------------------------

def test_plan_data_specs_are_absolute_and_hashed(tmp_path, monkeypatch):
    from advisor.bundle import load_bundle as _data, data_changed as _data_changed
    from advisor.decide.plan import Plan, Step, plan_from_json

    monkeypatch.chdir(tmp_path)
    _save(tmp_path, "val.pt")
    _save(tmp_path, "train.pt")
    b = _data("val.pt", None, "train.pt", (1, 3, 32, 32))
    assert b.specs["val"] == str(tmp_path / "val.pt") and b.specs["test"] is None
    assert b.specs["train"] == str(tmp_path / "train.pt")
    assert set(b.specs["sha256"]) == {"val", "train"}
    assert all(len(h) == 64 for h in b.specs["sha256"].values())
    plan = plan_from_json(Plan("p", [Step("int8_static", {})], data=b.specs).to_json(),
                          {"int8_static"})
    used = {"val": plan.data["val"], "train": plan.data["train"]}
    assert _data_changed(plan, used) == []
    _save(tmp_path, "val.pt", x=X * 0.5)  # the data changed after analyze
    notes = _data_changed(plan, used)
    assert len(notes) == 1 and "val data" in notes[0] and "--data" in notes[0]
    # an older plan (relative specs, no hashes) still loads and gives no warning
    old = Plan("p", [Step("int8_static", {})], data={"val": "val.pt", "train": None}).to_json()
    assert _data_changed(plan_from_json(old, {"int8_static"}), {"val": "val.pt"}) == []


def test_hooks_stay_as_written_and_folders_hash_their_listing(tmp_path):
    from advisor.data_checks import absolute_spec, data_fingerprint

    assert absolute_spec("pkg.mod:fn") == "pkg.mod:fn" and data_fingerprint("pkg.mod:fn") is None
    d = tmp_path / "imgs" / "a"
    d.mkdir(parents=True)
    (d / "1.png").write_bytes(b"123")
    h1 = data_fingerprint(tmp_path / "imgs")
    assert h1 == data_fingerprint(tmp_path / "imgs")
    (d / "2.png").write_bytes(b"4")
    assert data_fingerprint(tmp_path / "imgs") != h1
    assert data_fingerprint(tmp_path / "missing.pt") is None


def test_apply_warns_when_the_plans_data_changed(artefacts, tmp_path, monkeypatch, capsys):
    """Replay from another directory: the plan's (absolute) data is found; changed data is a
    warning line in apply's output."""
    from advisor.bundle import load_bundle as _data
    from advisor.decide.plan import Plan, Step

    work = tmp_path / "analysis"
    work.mkdir()
    monkeypatch.chdir(work)
    _save(work, "val.pt")
    specs = _data("val.pt", None, None, (1, 3, 32, 32)).specs
    plan = Plan("p", [Step("prune_unstructured", {"sparsity": 0.3})], data=specs)
    (work / "plan.json").write_text(json.dumps(plan.to_json()))
    _save(work, "val.pt", x=X * 0.5)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    import advisor.api

    monkeypatch.setattr(advisor.api, "DEFAULT_MEASURE",
                        {"warmup": 1, "repeats": 3, "max_seconds": 0.2})
    rc = main(["apply", str(artefacts["pt2"]), "--plan", str(work / "plan.json"), "--out",
               str(elsewhere / "out")])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "warning: the plan's val data" in out.out and "changed" in out.out
