"""The import graph of advisor: no cycles, and no technique module importing another
(`scripts/check_imports.py`, which reads the sources with `ast`)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "check_imports.py"


def _checker():
    spec = importlib.util.spec_from_file_location("check_imports", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_advisor_has_no_cycles_and_no_technique_to_technique_imports():
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no import cycles, no technique-to-technique imports" in proc.stdout


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return tmp_path


def test_the_checker_finds_function_level_cycles_and_technique_imports(tmp_path, capsys):
    pass_src = '''
        from advisor.passes.base import register_pass

        @register_pass("{name}", object)
        def apply(model, config, ctx):
            {body}
        '''
    root = _tree(tmp_path, {
        "advisor/__init__.py": "",
        "advisor/a.py": "def f():\n    from advisor import b\n",  # function level
        "advisor/b.py": "import advisor.a\n",
        "advisor/passes/__init__.py": "from advisor.passes.base import register_pass\n",
        "advisor/passes/base.py": "import advisor.passes\ndef register_pass(*a):\n"
                                  "    return lambda f: f\n",
        "advisor/passes/one.py": pass_src.format(name="one", body="from .two import apply"),
        "advisor/passes/two.py": pass_src.format(name="two", body="return None"),
        "advisor/passes/helper.py": "from advisor.passes import one\n",
    })
    checker = _checker()
    graph, techniques = checker.build_graph(root)
    assert techniques == {"advisor.passes.one", "advisor.passes.two"}
    assert checker.cycles(graph) == [["advisor.a", "advisor.b"]]  # base -> its package: no loop
    assert checker.technique_imports(graph, techniques) == [("advisor.passes.one",
                                                             "advisor.passes.two")]
    assert checker.main(["--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "cycle: advisor.a <-> advisor.b" in out
    assert "technique imports technique: advisor.passes.one -> advisor.passes.two" in out
