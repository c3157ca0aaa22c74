"""Loading the recorded Stripe payloads under tests/fixtures/stripe/ (see its README)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

RECORDINGS = Path(__file__).resolve().parents[1] / "fixtures" / "stripe"
Version = Literal["legacy", "current"]
VERSIONS: tuple[Version, ...] = ("legacy", "current")


def path(version: Version, name: str) -> Path:
    return RECORDINGS / version / f"{name}.json"


def load(version: Version, name: str) -> Any:
    return json.loads(path(version, name).read_text())


def raw(version: Version, name: str) -> bytes:
    return path(version, name).read_bytes()


def all_files() -> list[Path]:
    return sorted(RECORDINGS.glob("*/*.json"))
