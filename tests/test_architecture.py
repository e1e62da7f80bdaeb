"""The core never imports Qt: only radassist.gui may (design: layers)."""
import ast
from pathlib import Path

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


def test_import_linter_contract_is_declared():
    text = (PACKAGE.parent / "pyproject.toml").read_text()
    assert "Core does not import Qt" in text
