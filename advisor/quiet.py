"""One way to keep the advisor's output clean while third-party tools run: the torch exporters
and loaders, fvcore and ONNX Runtime's quantization tools warn, log and print freely."""
from __future__ import annotations

import contextlib
import io
import logging
import warnings

__all__ = ["quiet"]

# loggers with a level of their own; the others inherit the root logger's level, raised as well
_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "torch.jit", "onnxscript", "fvcore")


@contextlib.contextmanager
def quiet(stdout: bool = True):
    """Ignore warnings and log only errors while the block runs; with `stdout`, also swallow what
    the block prints (the dynamo exporter's progress lines). A model's own forward pass should
    run with `stdout=False`, so that what the user's code prints stays visible."""
    loggers = [logging.getLogger()] + [logging.getLogger(n) for n in _LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.ExitStack() as stack:
            warnings.simplefilter("ignore")
            if stdout:
                stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)
