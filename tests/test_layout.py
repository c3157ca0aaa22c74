"""The layout's one rule for imports: jobs/ uses service/, never the reverse, except in
service/'s composition root (the app factory and the CLI, which wire the jobs in)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1]
COMPOSITION_ROOT = {"service/app.py", "service/cli.py"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_service_does_not_import_jobs():
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            n for n in _imports(path) if n == "jobs" or n.startswith("jobs.")
        )
        for path in sorted((ROOT / "service").rglob("*.py"))
        if str(path.relative_to(ROOT)) not in COMPOSITION_ROOT
    }
    assert {k: v for k, v in offenders.items() if v} == {}
