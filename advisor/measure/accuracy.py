"""Accuracy on labelled data and agreement between two models, for torch modules and ONNX models.

A "model" here is an `nn.Module`, a path to an `.onnx` file, an ONNX Runtime `InferenceSession`,
or any callable mapping a batch tensor to logits (torch files are loaded by `advisor.model_io`,
the one place that unpickles). Without labels, agreement with the original
model (top-1 agreement, max absolute logit difference) is what can be reported honestly.

The one implementation of these figures: the passes (int8 agreement and accuracy, the fp32
fallback), the trial and the search all compute them here. `top1_accuracy` and
`logits_agreement` work on logits already computed (numpy arrays); `accuracy` and `agreement`
run the models over a loader.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

__all__ = ["accuracy", "agreement", "correct_flags", "predictor", "top1_accuracy",
           "logits_agreement"]


def top1_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Share in [0, 1] of rows whose arg-max is the label."""
    return float((np.asarray(logits).argmax(1) == np.asarray(labels)).mean())


def logits_agreement(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Share of equal top-1 predictions and the largest absolute logit difference."""
    a, b = np.asarray(reference), np.asarray(candidate)
    return {"top1_agreement": float((a.argmax(1) == b.argmax(1)).mean()),
            "max_abs_diff": float(np.max(np.abs(a - b))) if a.size else 0.0}


def predictor(model: Any, threads: int | None = None) -> Callable[[Any], np.ndarray]:
    """A function batch → logits (numpy float32) for a module, an ONNX path/session or a callable."""
    import torch

    if isinstance(model, (str, Path)):  # ONNX only: loading torch files is model_io's job
        from advisor.export import onnx_session
        model = onnx_session(Path(model), threads)
    if hasattr(model, "get_inputs") and hasattr(model, "run"):  # onnxruntime.InferenceSession
        from advisor.export import run_onnx
        sess = model
        return lambda x: np.asarray(run_onnx(sess, x), dtype=np.float32)
    if isinstance(model, torch.nn.Module):
        try:
            model.eval()
        except NotImplementedError:  # an exported program's module is always in eval form
            pass

    @torch.inference_mode()
    def predict(x):
        x = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
        out = model(x)
        out = out[0] if isinstance(out, (tuple, list)) else out
        if not isinstance(out, torch.Tensor):  # a callable that already returns numpy
            return np.asarray(out, dtype=np.float32)
        return out.detach().float().cpu().numpy()
    return predict


def _batches(loader_or_inputs: Any) -> Iterable[tuple[Any, Any]]:
    """(inputs, labels-or-None) batches from a DataLoader, an iterable of batches or a tensor."""
    import torch

    if isinstance(loader_or_inputs, (torch.Tensor, np.ndarray)):
        yield loader_or_inputs, None
        return
    for batch in loader_or_inputs:
        if isinstance(batch, (tuple, list)):
            yield batch[0], (batch[1] if len(batch) > 1 else None)
        else:
            yield batch, None


def accuracy(model_or_onnx_path: Any, loader: Iterable) -> float:
    """Top-1 accuracy in [0, 1] over a loader of (inputs, labels) batches."""
    return float(correct_flags(model_or_onnx_path, loader).mean())


def correct_flags(model_or_onnx_path: Any, loader: Iterable) -> np.ndarray:
    """Per sample, in the loader's order: whether the top-1 prediction is the label (bool).

    Paired with the baseline's flags on the same samples, these give the drop's uncertainty
    (`advisor.measure.drop_bound`)."""
    from advisor.errors import DataError

    predict = predictor(model_or_onnx_path)
    flags = []
    for x, y in _batches(loader):
        if y is None:
            raise DataError("accuracy needs labelled batches (inputs, labels)",
                            "use agreement() to compare models without labels")
        pred = predict(x).argmax(axis=1)
        labels = np.asarray(y.cpu() if hasattr(y, "cpu") else y)
        flags.append(pred == labels)
    if not flags or not sum(len(f) for f in flags):
        raise DataError("the evaluation data is empty")
    return np.concatenate(flags).astype(bool)


def agreement(reference: Any, candidate: Any, loader_or_inputs: Any) -> dict[str, float]:
    """How closely `candidate` follows `reference`: share of equal top-1 predictions and the
    largest absolute logit difference, over the given inputs (labels, if any, are ignored)."""
    ref, cand = predictor(reference), predictor(candidate)
    pairs = [(ref(x), cand(x)) for x, _ in _batches(loader_or_inputs)]
    if not pairs or not sum(len(a) for a, _ in pairs):
        from advisor.errors import DataError
        raise DataError("no inputs to compare the models on")
    return logits_agreement(np.concatenate([a for a, _ in pairs]),
                            np.concatenate([b for _, b in pairs]))


def artifact_predictor(artifact: str | Path, runtime: str, target=None
                       ) -> Callable[[Any], np.ndarray]:
    """Logits of a deployed artefact file: ONNX in ONNX Runtime, `.pt2`/`.ts` in torch. On a
    target with a device link they are the device runtime's outputs: the same int8 model scores
    differently on different CPUs, so accuracy comes from the target."""
    import torch

    link = getattr(target, "link", None)
    if link is not None:
        from advisor.device.remote import remote_predictor
        from advisor.measure.latency import check_measurable
        check_measurable(runtime, target)
        return remote_predictor(link, artifact, target.threads)
    if runtime == "onnxruntime":
        return predictor(Path(artifact))
    path = str(artifact)
    module = torch.jit.load(path) if path.endswith(".ts") else torch.export.load(path).module()
    return predictor(module)
