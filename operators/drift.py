"""Per-entity drift detection with river's ADWIN, KSWIN or PageHinkley.

One river detector per (entity, field); every value is passed to it in stream order exactly as a
user would call ``detector.update(x)``, so alarms fire at the same stream index as river's own.
Fields can be event fields or another operator's per-event score (``score:<operator>``). All fields
that alarm on the same event produce one alert, whose score is the number of alarming fields.

>>> from operators.event import Event, SourcePosition
>>> op = DriftOperator.from_config("drift", ["x"], DriftParams(detector="page_hinkley"))
>>> values = [0.0] * 100 + [10.0] * 20
>>> events = [Event("a", i, {"x": v}, SourcePosition(topic="t", partition=0, offset=i))
...           for i, v in enumerate(values)]
>>> [(a.source.offset, a.reason) for a in op.process(Batch(events))]
[(105, 'PageHinkley detected a change in x')]
"""
from __future__ import annotations

import inspect
import zlib
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Sequence

import numpy as np
from river import drift

from operators.base import Batch, OperatorBase
from operators.event import Alert
from operators.plain_state import load_plain, to_plain

DETECTORS = {"adwin": drift.ADWIN, "kswin": drift.KSWIN, "page_hinkley": drift.PageHinkley}


def detector_parameters(detector: str) -> dict[str, inspect.Parameter]:
    """The keyword parameters river's constructor accepts (the config check validates against them)."""
    return dict(inspect.signature(DETECTORS[detector]).parameters)


@dataclass
class DriftParams:
    """``detector``: adwin, kswin or page_hinkley; ``detector_params``: passed to river's constructor
    unchanged (for kswin without ``seed``, each entity and field gets a stable seed of its own);
    ``severity``: the level given to drift alerts."""

    detector: Literal["adwin", "kswin", "page_hinkley"] = "adwin"
    detector_params: dict[str, Any] = field(default_factory=dict)
    severity: str = "warning"


class DriftOperator(OperatorBase):
    kind: ClassVar[str] = "drift"
    Params: ClassVar[type] = DriftParams

    def __init__(self, name: str, fields: Sequence[str], params: DriftParams) -> None:
        super().__init__(name, fields, params)
        self.detector_class = DETECTORS[params.detector]
        self.detectors: dict[tuple[str, str], drift.base.DriftDetector] = {}

    def _new_detector(self, key: str, field_name: str):
        kwargs = dict(self.params.detector_params)
        if "seed" in detector_parameters(self.params.detector) and "seed" not in kwargs:
            kwargs["seed"] = zlib.crc32(f"{key}\x00{field_name}".encode())
        return self.detector_class(**kwargs)

    def _detector(self, key: str, field_name: str):
        detector = self.detectors.get((key, field_name))
        if detector is None:
            detector = self.detectors[(key, field_name)] = self._new_detector(key, field_name)
        return detector

    def process(self, batch: Batch) -> list[Alert]:
        values = batch.matrix(self.fields)
        observed = ~np.isnan(values)
        alerts = []
        for row, event in enumerate(batch.events):
            drifted = []
            for col, field_name in enumerate(self.fields):
                if observed[row, col]:
                    detector = self._detector(event.key, field_name)
                    detector.update(float(values[row, col]))
                    if detector.drift_detected:
                        drifted.append(field_name)
            if drifted:
                alerts.append(
                    self.alert(
                        event,
                        score=float(len(drifted)),
                        severity=self.params.severity,
                        reason=f"{self.detector_class.__name__} detected a change in {', '.join(drifted)}",
                        fields=drifted,
                    )
                )
        return alerts

    def snapshot(self) -> dict[str, Any]:
        return {
            "detectors": [
                {"key": key, "field": field_name, "state": to_plain(detector)}
                for (key, field_name), detector in self.detectors.items()
            ]
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.detectors = {}
        for entry in state["detectors"]:
            detector = self._new_detector(entry["key"], entry["field"])
            load_plain(detector, entry["state"])
            self.detectors[(entry["key"], entry["field"])] = detector
