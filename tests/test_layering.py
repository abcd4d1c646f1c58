"""The package boundaries of ARCHITECTURE.md, checked on the source: a test, so a stray import fails CI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "koboldtui"
RULES = {  # third-party module → the only package allowed to import it
    "textual": "tui",
    "llama_cpp": "engine",
    "pynvml": "gpu",
    "psutil": "system",
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module,home", sorted(RULES.items()))
def test_only_one_package_imports(module, home):
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if module in imported_modules(path) and path.relative_to(PACKAGE).parts[0] != home
    ]
    assert offenders == [], f"{module} may only be imported inside koboldtui/{home}/"


def test_nothing_imports_the_panel():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in ("tui",) or rel.name == "panel.py" or rel.name == "cli.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("koboldtui.tui"):
                offenders.append(str(rel))
    assert offenders == []
