"""The core never imports Qt: only radassist.gui may (design: layers)."""
import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import radassist

PACKAGE = Path(radassist.__file__).resolve().parent


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_only_gui_imports_qt():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "gui":
            continue
        bad = {n for n in _imports(path) if n.split(".")[0] in ("PySide6", "PyQt5", "PyQt6")
               or n.startswith("radassist.gui")}
        # commands/gui.py launches the app: it may import radassist.gui (lazily), never Qt itself.
        if rel.as_posix() == "commands/gui.py":
            bad = {n for n in bad if not n.startswith("radassist.gui")}
        if bad:
            offenders.append(f"{rel}: {sorted(bad)}")
    assert not offenders, offenders


@pytest.mark.parametrize("probe, contract", [
    ("import PySide6.QtCore\n", "Core does not import Qt"),
    ("from radassist.gui import worklist_model\n", "Only the gui command reaches the GUI package"),
])
def test_import_linter_contracts_catch_a_new_core_module(tmp_path, probe, contract):
    """The contracts cover the whole core, so a module nobody listed is checked too."""
    shutil.copytree(PACKAGE, tmp_path / "radassist", ignore=shutil.ignore_patterns("__pycache__", "*.pt", "*.safetensors"))
    shutil.copy(PACKAGE.parent / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "radassist" / "brand_new_core_module.py").write_text(probe)
    run = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                          "sys.exit(lint_imports_command())", "--no-cache"],
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)},
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0, run.stdout
    assert f"{contract} BROKEN" in run.stdout
    assert "radassist.brand_new_core_module" in run.stdout
