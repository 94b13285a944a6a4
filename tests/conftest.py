"""Shared fixtures: digits splits and briefly trained example models (session-cached).

Area-specific fixtures live in tests/<area>/conftest.py.
"""
from __future__ import annotations

import atexit
import copy
import os
import shutil
import tempfile

import pytest
import torch

# the trial cache (advisor.trial_cache) of this test session, never the user's; every test then
# gets its own (`_own_trial_cache`), so that no test finds another's trials already measured
os.environ["ADVISOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="advisor-test-trial-cache-")
atexit.register(shutil.rmtree, os.environ["ADVISOR_CACHE_DIR"], True)

# one thread: on a shared 2-core machine two torch threads spin-wait (81 s vs 9 s measured)
torch.set_num_threads(1)

_TRAINED: dict[str, object] = {}


# the zoo's coverage table (tests/zoo/table.py): collected here, where every test report
# arrives — the pytest-xdist controller loads this conftest but not tests/zoo's
def pytest_runtest_logreport(report):
    if any(name == "zoo_cell" for name, _ in getattr(report, "user_properties", ())):
        from tests.zoo.table import collect
        collect(report)


def pytest_sessionfinish(session, exitstatus):
    import os
    if os.environ.get("ADVISOR_ZOO_TABLE"):
        from tests.zoo.table import write_if_asked
        write_if_asked(session)


@pytest.fixture(scope="session")
def digits_splits():
    from advisor.examples.digits import load_digits_splits
    return load_digits_splits()


@pytest.fixture(scope="session")
def digits_loaders(digits_splits):
    from advisor.examples.digits import loader
    return {"train": loader(digits_splits["train"], 64, shuffle=True),
            "val": loader(digits_splits["val"], 256),
            "test": loader(digits_splits["test"], 256)}


@pytest.fixture(scope="session")
def trained_example(digits_splits):
    """`trained_example(name)` → a fresh copy of example `name` trained briefly (cached)."""
    from advisor.examples.build import train_example

    def get(name: str, epochs: int = 4):
        key = f"{name}:{epochs}"
        if key not in _TRAINED:
            _TRAINED[key] = train_example(name, digits_splits, epochs=epochs)
        ex = _TRAINED[key]
        return copy.deepcopy(ex.model).eval(), ex
    return get


@pytest.fixture
def example_input():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="session")
def example_dir(tmp_path_factory, trained_example, digits_splits):
    """A trained resnet.pt2 (with arch metadata) and digits splits as the CLI expects them."""
    from advisor.examples.build import INPUT_SHAPE
    from advisor.export import save_pt2

    d = tmp_path_factory.mktemp("example")
    model, ex = trained_example("resnet", epochs=4)
    save_pt2(model, d / "resnet.pt2", INPUT_SHAPE,
             {"arch": ex.arch, "arch_kwargs": ex.arch_kwargs, "num_classes": 10})
    for name, split in digits_splits.items():
        torch.save({"inputs": split.inputs, "labels": split.labels}, d / f"digits-{name}.pt")
    return d


@pytest.fixture(autouse=True)
def _own_trial_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVISOR_CACHE_DIR", str(tmp_path / "trial-cache"))
