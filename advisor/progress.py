"""Stage lines from inside a trial (export, step k/n, train epoch k/n, measure, evaluate) to the
process that shows progress.

A trial runs in a spawned worker; the code that knows its stage (the runner, the training loop,
the trial) calls `stage("...")`, which goes to the sink installed for the trial: in a worker a
queue inherited at spawn (`install_queue`, from the pool's initializer), drained by a thread in
the parent (`forward`); in-process a plain callback (`sink`). Without a sink `stage` does
nothing, so library use and tests pay nothing.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable

_sink: Callable[[str], None] | None = None
_STOP = None  # the sentinel that ends `forward`


def stage(text: str) -> None:
    """Report the trial's current stage (a short phrase, e.g. "train epoch 2/5")."""
    if _sink is not None:
        with contextlib.suppress(Exception):  # progress must never break a trial
            _sink(text)


@contextlib.contextmanager
def sink(callback: Callable[[str], None] | None):
    """Send `stage` lines to `callback` while the block runs (in this process)."""
    global _sink
    old, _sink = _sink, callback
    try:
        yield
    finally:
        _sink = old


def install_queue(queue: Any) -> None:
    """In a worker process: send `stage` lines to `queue` (inherited at spawn)."""
    global _sink
    _sink = None if queue is None else queue.put


@contextlib.contextmanager
def forward(queue: Any, callback: Callable[[str], None] | None):
    """In the parent: call `callback` with each line the worker puts on `queue`, from a thread,
    until the block ends."""
    if callback is None or queue is None:
        yield
        return

    def pump():
        while True:
            try:
                item = queue.get()
            except (EOFError, OSError):
                return
            if item is _STOP:
                return
            with contextlib.suppress(Exception):  # a display error must not stop the pump
                callback(item)

    t = threading.Thread(target=pump, name="trial-progress", daemon=True)
    t.start()
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):  # a queue already closed
            queue.put(_STOP)
        t.join(timeout=5.0)
