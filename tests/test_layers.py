"""The map of design §9, enforced: inside service/, imports only point down the list of
rooms; no room of service/ imports jobs/ or sim/ (only the composition root starts a job);
jobs/ never imports sim/. Every import counts: module level, inside functions, and under
TYPE_CHECKING (a type-only arrow is still an arrow a reader has to follow).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Top to bottom. A module may import its own room and any room below it.
ROOMS = [
    # Static files only: the page reads /v1 in the browser and imports no room.
    "service.dashboard",
    "service.ops",
    "service.sync",
    "service.projector",
    "service.metrics",
    "service.payments",
    "service.ledger",
    "service.webhooks",
    "service.stripe_shapes",
    "service.kit",
    # Below the rooms: configuration and the ORM base every room builds on.
    "service.settings",
    "service.db",
]
# The composition root: builds the app and the CLI, may start jobs and the demo.
ROOT_MODULES = ("service.app", "service.cli", "service.openapi", "service.models")
ROOT_PACKAGES = ("service.migrations",)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.add(name)
    return found


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _room(name: str) -> int | None:
    for rank, room in enumerate(ROOMS):
        if _within(name, room):
            return rank
    return None


def _files(*tops: str) -> list[Path]:
    return sorted(p for top in tops for p in (ROOT / top).rglob("*.py"))


def _is_root(module: str) -> bool:
    return module in ROOT_MODULES or any(_within(module, p) for p in ROOT_PACKAGES)


def test_every_service_module_is_placed() -> None:
    unplaced = [
        _module_name(p)
        for p in _files("service")
        if _module_name(p) != "service"
        and _room(_module_name(p)) is None
        and not _is_root(_module_name(p))
    ]
    assert unplaced == [], "add these to ROOMS or the composition root (and design §9)"


def upward_imports() -> list[str]:
    bad = []
    for path in _files("service"):
        module = _module_name(path)
        if _is_root(module):
            continue
        rank = _room(module)
        for name in sorted(_imports(path)):
            if _within(name, "jobs") or _within(name, "sim"):
                bad.append(f"{module} -> {name} (a room never imports jobs/ or sim/)")
                continue
            if not _within(name, "service") or name == "service":
                continue
            if _is_root(name):
                bad.append(f"{module} -> {name} (the composition root is above every room)")
                continue
            target = _room(name)
            if rank is not None and target is not None and target < rank:
                bad.append(f"{module} -> {name} ({ROOMS[rank]} is below {ROOMS[target]})")
    return bad


def test_service_imports_point_down() -> None:
    assert upward_imports() == []


@pytest.mark.parametrize("top", ["jobs"])
def test_jobs_never_import_the_simulator(top: str) -> None:
    bad = [
        f"{_module_name(p)} -> {name}"
        for p in _files(top)
        for name in _imports(p)
        if _within(name, "sim")
    ]
    assert bad == []


def test_the_check_sees_an_upward_arrow(tmp_path: Path) -> None:
    # The walker itself: a relative import from a low room to a high one is found.
    low = ROOT / "service" / "kit"
    probe = low / "_layer_probe.py"
    probe.write_text("from ..metrics import definitions\nfrom jobs import x\n")
    try:
        bad = upward_imports()
    finally:
        probe.unlink()
    assert (
        "service.kit._layer_probe -> service.metrics (service.kit is below service.metrics)" in bad
    )
    assert any(b.startswith("service.kit._layer_probe -> jobs") for b in bad)
