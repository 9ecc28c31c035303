"""The layout keeps the architecture: the transforms and the element types they make stand
alone, below the application, and import nothing of it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_no_module_under_transforms_imports_the_application():
    modules = sorted((ROOT / "transforms").glob("*.py"))
    assert len(modules) >= 8
    offenders = {
        path.name: sorted(m for m in imported_modules(path) if m.split(".")[0] == "beam_tally")
        for path in modules
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_transforms_import_without_the_application(tmp_path):
    """In a fresh interpreter: importing every transforms module loads no beam_tally module."""
    import subprocess
    import sys

    code = (
        "import importlib, pathlib, sys\n"
        "for p in sorted(pathlib.Path('transforms').glob('*.py')):\n"
        "    importlib.import_module('transforms.' + p.stem)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'beam_tally'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip().splitlines()[-1] == "[]"
