"""Atomic output writing: the file appears whole or not at all, with ordinary permissions."""
from __future__ import annotations

import os
import stat

import pytest

from advisor.errors import AdvisorError
from advisor.fileio import atomic_path, write_json_atomic


def test_written_file_has_umask_permissions_and_no_temp_left(tmp_path):
    out = write_json_atomic(tmp_path / "r.json", {"a": 1})
    mode = stat.S_IMODE(out.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # not mkstemp's 0600
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_failure_leaves_previous_file_and_no_temp(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer crashed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_refuses_to_overwrite_a_protected_input(tmp_path):
    src = tmp_path / "model.pt2"
    src.write_text("user's model")
    with pytest.raises(AdvisorError, match="refusing to overwrite"):
        with atomic_path(src, protect=(src,)):
            pass
    assert src.read_text() == "user's model"
