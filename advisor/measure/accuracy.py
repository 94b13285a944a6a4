"""Accuracy on labelled data and agreement between two models, for torch modules and ONNX models.

A "model" here is an `nn.Module`, a path to an `.onnx` file, an ONNX Runtime `InferenceSession`,
or any callable mapping a batch tensor to logits (torch files are loaded by `advisor.model_io`,
the one place that unpickles). Without labels, agreement with the original
model (top-1 agreement, max absolute logit difference) is what can be reported honestly.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

__all__ = ["accuracy", "agreement", "predictor"]


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
    from advisor.errors import DataError

    predict = predictor(model_or_onnx_path)
    correct = total = 0
    for x, y in _batches(loader):
        if y is None:
            raise DataError("accuracy needs labelled batches (inputs, labels)",
                            "use agreement() to compare models without labels")
        pred = predict(x).argmax(axis=1)
        labels = np.asarray(y.cpu() if hasattr(y, "cpu") else y)
        correct += int((pred == labels).sum())
        total += len(labels)
    if total == 0:
        raise DataError("the evaluation data is empty")
    return correct / total


def agreement(reference: Any, candidate: Any, loader_or_inputs: Any) -> dict[str, float]:
    """How closely `candidate` follows `reference`: share of equal top-1 predictions and the
    largest absolute logit difference, over the given inputs (labels, if any, are ignored)."""
    ref, cand = predictor(reference), predictor(candidate)
    same = total = 0
    max_diff = 0.0
    for x, _ in _batches(loader_or_inputs):
        a, b = ref(x), cand(x)
        same += int((a.argmax(axis=1) == b.argmax(axis=1)).sum())
        total += len(a)
        max_diff = max(max_diff, float(np.max(np.abs(a - b))) if a.size else 0.0)
    if total == 0:
        from advisor.errors import DataError
        raise DataError("no inputs to compare the models on")
    return {"top1_agreement": same / total, "max_abs_diff": max_diff}
