"""The agent needs only the standard library, onnxruntime and numpy: proven in an environment
without torch, and by watching `sys.modules` where torch is importable."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from advisor.device.bundle import AGENT_FILES, agent_archive

ROOT = Path(__file__).resolve().parents[2] / "advisor"


def test_the_agent_environment_has_no_torch(agent_python):
    r = subprocess.run([str(agent_python), "-c", "import torch"], capture_output=True)
    assert r.returncode != 0, f"{agent_python} can import torch: the proof below would be void"
    r = subprocess.run([str(agent_python), "-c", "import advisor"], capture_output=True,
                       cwd="/")
    assert r.returncode != 0, "advisor is installed there: the push would not be tested"


def test_a_measurement_in_the_torch_free_environment(local_link, tiny_onnx):
    from advisor.device.remote import run_worker_remote

    r = run_worker_remote(local_link, {"artifact": str(tiny_onnx), "runtime": "onnxruntime",
                                       "input_shape": [1, 3, 16, 16], "threads": 1, "warmup": 2,
                                       "repeats": 10, "max_seconds": 0.2}, 60)
    assert r["ok"], r
    assert len(r["samples_ms"]) >= 10 and r["torch_imported"] is False
    assert r["cores"] and len(r["cores"]) == 1 and r["threads"] == 1


def test_the_agent_never_imports_torch_even_where_it_could(tiny_onnx, tmp_path):
    """In this (torch) environment: the agent's modules, its fingerprint and a measurement by its
    worker leave torch out of sys.modules."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from advisor.agent.server import Agent\n"
        f"a = Agent(Path({str(tmp_path / 'c')!r}), 100)\n"
        "a.fingerprint({})\n"
        "import advisor.measure._worker, advisor.measure.ort_profile, advisor.agent.onnx_check\n"
        f"advisor.agent.onnx_check.check_onnx({str(tiny_onnx)!r})\n"
        f"advisor.measure.ort_profile.profile_events({str(tiny_onnx)!r}, (1, 3, 16, 16), 1, 2, 1)\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)\n"
        "print('clean')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=str(ROOT.parent))
    assert r.stdout.strip() == "clean", r.stderr[-2000:]


# torch imports the agent never reaches: the worker's torch runtime (the agent refuses runtime
# "torch") and the host's GPU probe (the agent's fingerprint uses detect_machine, not it)
TORCH_ONLY_IN = {("measure/_worker.py", "_torch_setup"), ("measure/host.py", "_gpu")}


def _imports(tree):
    """(imported module, enclosing top-level function or None) for every import."""
    for top in tree.body:
        where = top.name if isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef)) else None
        for node in ast.walk(top):
            if isinstance(node, ast.ImportFrom) and node.module:
                yield node.module, where
            elif isinstance(node, ast.Import):
                for a in node.names:
                    yield a.name, where


def test_the_pushed_archive_holds_every_module_the_agent_imports():
    """Each `advisor.*` import in the bundled files names a bundled module, so the agent runs on
    a device where advisor is not installed; torch is imported only where the agent never goes."""
    bundled = {"advisor." + f[:-3].replace("/", ".").removesuffix(".__init__") for f in
               AGENT_FILES} | {"advisor"}
    missing = []
    for rel in AGENT_FILES:
        for name, where in _imports(ast.parse((ROOT / rel).read_text())):
            if name.split(".")[0] == "advisor" and name not in bundled:
                missing.append(f"{rel}: {name}")
            if name.split(".")[0] == "torch" and (rel, where) not in TORCH_ONLY_IN:
                missing.append(f"{rel} ({where}): imports torch")
    assert not missing, missing
    import io
    import zipfile
    names = set(zipfile.ZipFile(io.BytesIO(agent_archive())).namelist())
    assert {"__main__.py"} | {f"advisor/{f}" for f in AGENT_FILES} == names
