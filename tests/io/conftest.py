"""Fixtures for model loading and data tests: one small model saved in every format (cached).

The reference model is `advisor.examples.models:resnet()` with default arguments (so the
factory spec and `--arch` rebuild it exactly) and seeded random weights, with non-trivial
BatchNorm statistics so that a loader which dropped buffers would be caught.
"""
from __future__ import annotations

import contextlib
import io
import json
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

ARCH = "advisor.examples.models:resnet"
SHAPE = (1, 3, 32, 32)


def make_reference() -> torch.nn.Module:
    from advisor.examples.models import resnet

    torch.manual_seed(123)
    model = resnet()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="session")
def reference():
    return make_reference()


@pytest.fixture
def probe():
    """A seeded batch of 3 inputs (batch > 1 exercises the dynamic batch dimension)."""
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="session")
def artefacts(tmp_path_factory, reference):
    """{format: path} of the reference model saved as pt2, pt2 without arch, TorchScript,
    state_dict, whole pickle and ONNX."""
    from advisor.export import save_pt2

    d = tmp_path_factory.mktemp("models")
    out = {"pt2": save_pt2(reference, d / "model.pt2", SHAPE, {"arch": ARCH, "arch_kwargs": {}}),
           "pt2_plain": save_pt2(reference, d / "plain.pt2", SHAPE)}
    with quiet():
        torch.jit.trace(reference, torch.zeros(SHAPE)).save(str(d / "model.ts"))
    out["torchscript"] = d / "model.ts"
    torch.save(reference.state_dict(), d / "weights.pt")
    out["state_dict"] = d / "weights.pt"
    torch.save(reference, d / "whole.pt")
    out["pickle"] = d / "whole.pt"
    out["onnx"] = write_onnx(reference, d / "model.onnx")
    return out


def write_onnx(model, path: Path) -> Path:
    """Single-file ONNX with a dynamic batch (written directly, independent of advisor.export)."""
    with quiet():
        prog = torch.onnx.export(model, (torch.zeros(2, 3, 32, 32),), dynamo=True,
                                 input_names=["input"], output_names=["output"],
                                 dynamic_shapes=({0: torch.export.Dim("batch")},))
        prog.save(str(path), external_data=False)
    return path


@contextlib.contextmanager
def quiet():
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def rewrite_zip(src: Path, dst: Path, edit) -> Path:
    """Copy a zip archive, passing each (relative name, bytes) through `edit` → bytes or None
    (drop); `edit` may return extra {relative name: bytes} under the key None."""
    with zipfile.ZipFile(src) as zin:
        names = zin.namelist()
        root = names[0].split("/", 1)[0] + "/"
        members = {n[len(root):]: zin.read(n) for n in names}
    extra = edit(None, None) or {}
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for rel, data in members.items():
            new = edit(rel, data)
            if new is not None:
                zout.writestr(root + rel, new)
        for rel, data in extra.items():
            zout.writestr(root + rel, data)
    return dst


def read_members(src: Path) -> tuple[str, list[tuple[str, bytes]]]:
    """(archive root, [(relative name, bytes)]) of a .pt2 in archive order."""
    with zipfile.ZipFile(src) as zin:
        names = zin.namelist()
        root = names[0].split("/", 1)[0]
        return root, [(n[len(root) + 1:], zin.read(n)) for n in names]


def write_entries(dst: Path, entries) -> Path:
    """Write raw zip entries [(full name, bytes)] as given: duplicates, odd names and all."""
    with warnings.catch_warnings(), zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        warnings.simplefilter("ignore")  # "Duplicate name"
        for name, data in entries:
            zout.writestr(zipfile.ZipInfo(name), data)
    return dst


def edit_json(data: bytes, fn) -> bytes:
    obj = json.loads(data)
    fn(obj)
    return json.dumps(obj).encode()


class MarkerPayload:
    """Unpickling this creates `marker` (Path.touch): evidence that untrusted code ran."""

    def __init__(self, marker: Path):
        self.marker = Path(marker)

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="session")
def helpers():
    """Test helpers as a namespace (tests cannot import conftest under --import-mode=importlib)."""
    import types

    return types.SimpleNamespace(rewrite_zip=rewrite_zip, edit_json=edit_json,
                                 read_members=read_members, write_entries=write_entries,
                                 MarkerPayload=MarkerPayload, write_onnx=write_onnx, quiet=quiet,
                                 make_reference=make_reference, ARCH=ARCH, SHAPE=SHAPE)
