"""Key paths of JSON payloads, and a comparison of a built payload against a recording.

A key path names a position in a payload: ``items.data[].price.recurring.interval``
(``[]`` stands for every element of a list). `key_paths` maps each path to the JSON
types seen there. `shape_differences` lists what a built payload has that a recorded one
does not: a path the recording lacks, or a JSON type the recording never has there.

Two things a recording cannot settle are not differences: what lies under a value the
recording has as ``null``, ``[]`` or ``{}`` (its shape is unknown), and ``null`` in the
built payload where the field is nullable (given by the caller: Stripe's reference says
so, or some recording has it null).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    raise TypeError(f"not a JSON value: {value!r}")


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def key_paths(value: Any) -> dict[str, set[str]]:
    """Every key path of `value` (the root is ``""``) with the JSON types found there."""
    found: dict[str, set[str]] = {}

    def walk(node: Any, path: str) -> None:
        found.setdefault(path, set()).add(json_type(node))
        if isinstance(node, Mapping):
            for key, child in node.items():
                walk(child, _join(path, str(key)))
        elif isinstance(node, list):
            for child in node:
                walk(child, f"{path}[]")

    walk(value, "")
    return found


@dataclass(frozen=True, order=True)
class Difference:
    path: str
    kind: Literal["missing", "type"]
    built: tuple[str, ...]  # JSON types in the built payload
    recorded: tuple[str, ...]  # JSON types in the recording (empty when missing)

    def __str__(self) -> str:
        if self.kind == "missing":
            return f"{self.path}: not in the recording (built {'/'.join(self.built)})"
        return f"{self.path}: built {'/'.join(self.built)}, recorded {'/'.join(self.recorded)}"


def _opaque(recorded: Mapping[str, set[str]]) -> set[str]:
    """Paths whose content the recording does not show: only ever null, [] or {}."""
    opaque = set()
    for path, types in recorded.items():
        if types == {"null"} or (
            types <= {"array", "object"}
            and not any(p.startswith((f"{path}.", f"{path}[]")) for p in recorded)
        ):
            opaque.add(path)
    return opaque


def _under(path: str, roots: Iterable[str]) -> bool:
    return any(path.startswith((f"{r}.", f"{r}[]")) for r in roots)


def shape_differences(
    built: Any,
    recorded: Any,
    *,
    nullable: Collection[str] = (),
    expandable: Collection[str] = (),
) -> list[Difference]:
    """What `built` has that `recorded` does not, path by path.

    `nullable`: paths where ``null`` is a legal value even if the recording has a value.
    `expandable`: paths where Stripe sends an id string or the expanded object, so a string
    in `built` matches an object in `recorded` (the object's own fields are still checked).
    """
    built_paths = key_paths(built)
    recorded_paths = key_paths(recorded)
    opaque = _opaque(recorded_paths)
    differences = []
    for path, types in sorted(built_paths.items()):
        if _under(path, opaque):
            continue  # the recording has null/[]/{} above: nothing to compare with
        if path not in recorded_paths:
            differences.append(Difference(path, "missing", tuple(sorted(types)), ()))
            continue
        allowed = set(recorded_paths[path])
        if allowed == {"null"}:
            continue  # recorded only as null: its non-null type is unknown
        if path in nullable:
            allowed.add("null")
        if path in expandable and "object" in allowed:
            allowed.add("string")
        if "number" in allowed:
            allowed.add("integer")  # JSON has one number type; 25 and 25.5 are both numbers
        if not types <= allowed:
            differences.append(
                Difference(path, "type", tuple(sorted(types)), tuple(sorted(recorded_paths[path])))
            )
    return differences


def null_paths(*payloads: Any) -> set[str]:
    """Paths that some payload has as null: evidence that Stripe allows null there."""
    return {p for payload in payloads for p, t in key_paths(payload).items() if "null" in t}
