"""The field names a sample of payloads holds under a schema preset: what its operators could name.

``vigil init`` chooses fields from them, and ``vigil config check --sample`` and a run's missing-field warning
suggest the closest one for a misspelt name.

>>> sample_fields("flat", [{"host": "a", "ts": 1, "metrics": {"cpu": 0.5}}])
{'host': 'text', 'ts': 'number', 'metrics.cpu': 'number'}
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.engine.schema import MAP_PATH, SAMPLE_NAME, SAMPLE_VALUE


@dataclass
class Leaf:
    """A path's values over the records: how many records have it, and its numbers and strings."""

    present: int = 0
    numbers: list[float] = field(default_factory=list)
    strings: list[str] = field(default_factory=list)

    def add(self, value: Any) -> None:
        self.present += 1
        if isinstance(value, str):
            self.strings.append(value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            self.numbers.append(value)

    @property
    def kind(self) -> str | None:
        if self.numbers and len(self.numbers) >= len(self.strings):
            return "number"
        return "text" if self.strings else None


def _walk(record: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, value in record.items():
        if isinstance(value, dict):
            yield from _walk(value, f"{prefix}{name}.")
        else:
            yield prefix + name, value


def leaf_paths(records: Iterable[dict]) -> dict[str, Leaf]:
    """Every leaf path (nested names dotted) of the records, in order of first appearance."""
    leaves: dict[str, Leaf] = {}
    for record in records:
        for path, value in _walk(record):
            leaves.setdefault(path, Leaf()).add(value)
    return leaves


def _children(objects: Iterable[dict], key: str) -> Iterator[dict]:
    for obj in objects:
        value = obj.get(key)
        if isinstance(value, list):
            yield from (item for item in value if isinstance(item, dict))


def _sample_value(value: Any) -> Any:
    """A Prometheus sample's value as the schema reads it: a number, or a number as text."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def sample_fields(preset: str, records: Sequence[dict]) -> dict[str, str]:
    """The field names the records hold under ``preset``, each with its kind (number or text), in order: what
    operators could name."""
    if preset == "otlp":
        metrics = _children(_children(_children(records, "resourceMetrics"), "scopeMetrics"), "metrics")
        return {name: "number" for name in dict.fromkeys(m.get("name") for m in metrics) if isinstance(name, str)}
    if preset in ("vigil", "telegraf"):
        leaves = leaf_paths(r[MAP_PATH] for r in records if isinstance(r.get(MAP_PATH), dict))
    elif preset == "prometheus":
        leaves = leaf_paths({r[SAMPLE_NAME]: _sample_value(r.get(SAMPLE_VALUE))} for r in records
                         if isinstance(r.get(SAMPLE_NAME), str))
    else:
        leaves = leaf_paths(records)
    return {path: leaf.kind for path, leaf in leaves.items() if leaf.kind}
