"""The data of one run — validation, held-out test and training loaders — and what is derived
from it once: the seeded 50/50 split, the reference inputs, the int8 calibration set, the label
checks and the content hashes `apply` compares against.

`analyze` and `apply` both build their data here, so a replay calibrates on exactly what the
analysis calibrated on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from advisor.decide.plan import Plan
from advisor.errors import DataError

__all__ = ["DataBundle", "load_bundle", "calibration_loader", "reference_inputs",
           "baseline_predict", "accuracy_of", "check_data_fits", "data_changed"]


@dataclass
class DataBundle:
    val: Any = None
    test: Any = None
    train: Any = None
    specs: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    preprocess: Any = None  # advisor.preprocess.Preprocess the files were read with

    @property
    def verified(self) -> bool:
        return self.val is not None


def load_bundle(data, test_data, train_data, input_shape, seed: int = 0,
                split_val: bool = True, preprocess=None) -> DataBundle:
    """Loaders for val/test/train; with only `data`, it is split 50/50 (seeded) into val/test so
    that selection and the final confirmation never use the same samples (`split_val=False`:
    `apply` replaying a plan whose analysis had separate test data uses all of `data`).

    `preprocess` (an `advisor.preprocess.Preprocess`) prepares every data file and folder the
    same way; it is recorded in `specs["preprocess"]` (plan.json's data section) when it does
    more than scale images to [0, 1]."""
    from advisor.data import load_data, split_loader
    from advisor.preprocess import Preprocess

    pre = preprocess or Preprocess()
    b = DataBundle(specs={"val": _spec(data), "test": _spec(test_data), "train": _spec(train_data)},
                   preprocess=pre)
    if pre.to_dict() is not None:
        b.specs["preprocess"] = pre.to_dict()
    get = lambda s, **kw: s if not isinstance(s, (str, Path)) else \
        load_data(str(s), input_shape=input_shape, preprocess=pre, **kw)
    if data is not None:
        b.val = get(data, batch_size=256)
    if test_data is not None:
        b.test = get(test_data, batch_size=256)
    elif b.val is not None and split_val:
        b.val, b.test = split_loader(b.val, (0.5, 0.5), seed=seed)
        b.notes.append("no --test-data: the evaluation data was split 50/50 (seeded) into a "
                       "validation half (selection) and a held-out half (confirmation)")
    if train_data is not None:
        b.train = get(train_data, batch_size=64, shuffle=True, seed=seed)
    if b.test is not None and b.val is None:
        raise DataError("--test-data needs --data (the validation split used for selection)")
    hashes = {role: h for role, x in (("val", data), ("test", test_data), ("train", train_data))
              if (h := _fingerprint(x)) is not None}
    if hashes:  # plan.json's data section: apply notices data that changed since
        b.specs["sha256"] = hashes
    return b


def _spec(x) -> str | None:
    """The spec recorded in report/plan: files and folders as absolute paths (so `apply` works
    from another directory), hooks as written, in-memory loaders as `<DataLoader>`."""
    from advisor.data_checks import absolute_spec

    return None if x is None else (absolute_spec(str(x)) if isinstance(x, (str, Path))
                                   else f"<{type(x).__name__}>")


def _fingerprint(x) -> str | None:
    from advisor.data_checks import data_fingerprint

    return data_fingerprint(str(x)) if isinstance(x, (str, Path)) else None


def data_changed(plan: Plan, used: dict) -> list[str]:
    """Warnings for data taken from the plan whose content hash differs from the recorded one.

    `used`: {role: spec} of the data apply took from the plan (not passed explicitly)."""
    recorded = plan.data.get("sha256") or {}
    notes = []
    for role, spec in used.items():
        if spec is None or not recorded.get(role):
            continue
        now = _fingerprint(spec)
        if now is not None and now != recorded[role]:
            flag = "--data" if role == "val" else f"--{role}-data"
            notes.append(f"the plan's {role} data {spec} changed since `advisor analyze` "
                         f"recorded it (sha256 {recorded[role][:12]}... now {now[:12]}...); "
                         f"results may differ: pass {flag} explicitly to use other data")
    return notes


def _output_width(loaded, loader) -> int | None:
    """The number of classes the model outputs: its logits' width on one sample of `loader`."""
    for x, _ in loader:
        try:
            out = baseline_predict(loaded)(x[:1])
        except Exception as e:
            raise DataError(f"the model fails on the data's first sample: {type(e).__name__}: "
                            f"{str(e).splitlines()[0][:160] if str(e) else ''}",
                            "pass data of the model's input shape") from None
        return int(out.shape[1]) if getattr(out, "ndim", 0) >= 2 else None
    return None


def check_data_fits(loaded, b: "DataBundle") -> None:
    """Refuse labels outside the model's classes (or negative), before any measurement: one
    forward pass on one sample gives the model's output width. (Non-finite inputs are refused
    when the data is read, in advisor.data.)"""
    from advisor.data_checks import check_labels

    split = b.test is not None and b.specs.get("test") is None  # val/test: halves of --data
    loaders = {"--data": [b.val, b.test] if split else b.val,
               "--test-data": None if split else b.test, "--train-data": b.train}
    first = next((x for x in (b.val, b.test, b.train) if x is not None), None)
    if first is None:
        return
    check_labels(loaders, _output_width(loaded, first),
                 {"--data": b.specs.get("val"), "--test-data": b.specs.get("test"),
                  "--train-data": b.specs.get("train")})


# ---- baseline -------------------------------------------------------------------------------

def baseline_predict(loaded, artifact: str | None = None, runtime: str | None = None,
                     target=None) -> Callable[[torch.Tensor], np.ndarray]:
    """Logits of the original model: its deployed `artifact` on `runtime` when given (measured
    like a candidate), else the loaded module, else its ONNX file."""
    from advisor.measure.accuracy import artifact_predictor, predictor

    if artifact is not None and runtime is not None:
        return artifact_predictor(artifact, runtime, target)
    # an ONNX input is its own file, also when it was lifted into a torch module
    return predictor(Path(loaded.onnx_path) if loaded.onnx_path is not None else loaded.module)


def accuracy_of(predict, loader) -> float:
    """Top-1 accuracy of `predict` (inputs → logits) over labelled batches."""
    from advisor.measure.accuracy import accuracy

    return accuracy(predict, loader)


def reference_inputs(data: DataBundle, input_shape, n: int = 128, seed: int = 0) -> torch.Tensor:
    """Inputs for the agreement check: validation inputs, else seeded synthetic ones."""
    if data.val is not None:
        xs, count = [], 0
        for x, _ in data.val:
            xs.append(x)
            count += len(x)
            if count >= n:
                break
        return torch.cat(xs)[:n]
    g = torch.Generator().manual_seed(seed)
    return torch.randn((min(n, 64),) + tuple(input_shape[1:]), generator=g)


# ---- analyze ---------------------------------------------------------------------------------

def calibration_loader(data_b: DataBundle, ref_x: torch.Tensor):
    """What int8 calibrates on, in analyze and apply alike: the training inputs when given (the
    selection data stays unseen), else the validation split, else the seeded synthetic inputs."""
    calib = data_b.train or data_b.val
    if calib is None:
        from torch.utils.data import DataLoader, TensorDataset
        calib = DataLoader(TensorDataset(ref_x, torch.full((len(ref_x),), -1)), batch_size=32)
    return calib
