"""The migration a test is about, found by name: renumbering a migration must not break it."""

from __future__ import annotations

from alembic.script import Script, ScriptDirectory

from service.db import MIGRATIONS_DIR


def revision_named(suffix: str) -> Script:
    """The one migration whose revision id ends in `suffix`."""
    found = [
        r
        for r in ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions()
        if r.revision.endswith(suffix)
    ]
    assert len(found) == 1, [r.revision for r in found]
    return found[0]
