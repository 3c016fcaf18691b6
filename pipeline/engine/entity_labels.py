"""Labels of an entity for the systems that page and plot by label (Prometheus remote-write, Alertmanager).

An entity key is the declared key parts joined by ``key_separator`` (``[source.schema]``). :class:`EntityLabels` turns it
back into labels: ``entity`` (the whole key, always there, so a dashboard has one variable that works for every schema)
plus one label per key part, named after the last segment of its path (``host``, ``service``). A part declared as a
whole object (``labels.*``, ``tags.*``) was written as ``name=value`` pairs: each pair becomes its own label. A part
name that Vigil's own labels use (``entity``, ``operator``, ``field``, ``severity``, ``alertname``, ``job``,
``instance``) or that is not a valid label name is written ``key_<name>``; a key that does not split into the declared
parts (a value that holds the separator) gets only ``entity``.

>>> from pipeline.config import SchemaConfig
>>> EntityLabels(SchemaConfig(preset="flat", key=["tags.host", "service"], key_separator="|")).labels("web-1|checkout")
{'entity': 'web-1|checkout', 'host': 'web-1', 'service': 'checkout'}
>>> EntityLabels(SchemaConfig(preset="prometheus")).labels("instance=db:9100,job=node")
{'entity': 'instance=db:9100,job=node', 'key_instance': 'db:9100', 'key_job': 'node'}
>>> EntityLabels(SchemaConfig()).labels("host-7")
{'entity': 'host-7', 'key': 'host-7'}
"""
from __future__ import annotations

import re

from pipeline.config import KAFKA_KEY, SchemaConfig

RESERVED = frozenset({"entity", "operator", "field", "severity", "alertname", "job", "instance"})
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def label_name(name: str) -> str:
    """``name`` as a label that cannot collide with Vigil's own or break Prometheus's label syntax."""
    if name in RESERVED or not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
        return "key_" + re.sub(r"[^a-zA-Z0-9_]", "_", name)
    return name


class EntityLabels:
    """The labels of an entity key under ``schema`` (module docstring)."""

    def __init__(self, schema: SchemaConfig) -> None:
        schema = schema.resolved()
        self.separator = schema.key_separator
        # Per key part: its label name, or None for a whole object written as name=value pairs.
        self.parts = [] if schema.key == [KAFKA_KEY] else [
            None if path.endswith(".*") else label_name(path.rsplit(".", 1)[-1]) for path in schema.key]

    def labels(self, key: str) -> dict[str, str]:
        labels = {"entity": key}
        if not self.parts:
            return labels
        values = key.split(self.separator) if len(self.parts) > 1 else [key]
        if len(values) != len(self.parts):
            return labels
        for name, value in zip(self.parts, values):
            if name is not None:
                labels[name] = value
                continue
            for pair in value.split(","):
                pair_name, equals, pair_value = pair.partition("=")
                if equals:
                    labels[label_name(pair_name)] = pair_value
        return labels
