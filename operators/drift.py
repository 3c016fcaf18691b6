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
>>> [(a.source.offset, a.reason) for a in op.process(Batch.from_events(events))]
[(105, 'PageHinkley detected a change in x')]

References
----------
Bifet, A. and Gavaldà, R. (2007). Learning from time-changing data with adaptive windowing. *SDM*.

Raab, C., Heusinger, M. and Schleif, F.-M. (2020). Reactive soft prototype computing for concept drift
streams. *Neurocomputing* 416, 340-351 (KSWIN).

Page, E. S. (1954). Continuous inspection schemes. *Biometrika* 41(1/2), 100-115.

Montiel, J. et al. (2021). River: machine learning for streaming data in Python. *JMLR* 22(110), 1-8.
"""
from __future__ import annotations

import difflib
import inspect
import itertools
import sys
import zlib
from dataclasses import dataclass
from typing import Any, ClassVar, Literal
from collections.abc import Sequence

import numpy as np
from river import drift

from operators.base import Operator
from operators.batch import Batch
from operators.event import Alert
from operators.params import ParamError, param
from operators.plain_state import load_plain, object_bytes, to_plain

SIZE_SAMPLE = 64  # detectors measured by state_bytes
DETECTORS = {"adwin": drift.ADWIN, "kswin": drift.KSWIN, "page_hinkley": drift.PageHinkley}


def detector_parameters(detector: str) -> dict[str, inspect.Parameter]:
    """The keyword parameters river's constructor accepts (the config check validates against them)."""
    return dict(inspect.signature(DETECTORS[detector]).parameters)


@dataclass
class DriftParams:
    """Parameters of :class:`DriftOperator`."""

    detector: Literal["adwin", "kswin", "page_hinkley"] = param("adwin", "river detector: adwin, kswin or page_hinkley",
                                                                 choices=("adwin", "kswin", "page_hinkley"))
    detector_params: dict[str, Any] = param({}, "passed to river's constructor unchanged (checked against its signature); "
                                                "for kswin without seed, each entity and field gets a stable seed")
    severity: str = param("warning", "severity of drift alerts")


class DriftOperator(Operator):
    kind: ClassVar[str] = "drift"
    Params: ClassVar[type] = DriftParams

    def __init__(self, name: str, fields: Sequence[str], params: DriftParams) -> None:
        super().__init__(name, fields, params)
        self.detector_class = DETECTORS[params.detector]
        accepted = detector_parameters(params.detector)
        for key in params.detector_params:
            if key not in accepted:
                close = difflib.get_close_matches(key, list(accepted), n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"{params.detector} accepts {', '.join(accepted)}"
                raise ParamError(f"detector_params.{key}", f"unknown {params.detector} parameter ({hint})")
        try:  # river checks values only when a detector is built: build one now, not at an entity's first event
            self._new_detector("", self.fields[0] if self.fields else "")
        except (TypeError, ValueError) as error:
            raise ParamError("detector_params", f"{self.detector_class.__name__} refuses them: {error}") from None
        self.detectors: dict[tuple[int, str], tuple[str, drift.base.DriftDetector]] = {}  # (slot, field) -> key, detector

    @classmethod
    def contract_cases(cls) -> list[tuple[list[str], DriftParams]]:
        return [(["x0", "x1"], DriftParams(detector="page_hinkley", detector_params={"threshold": 5.0, "min_instances": 10})),
                (["x0"], DriftParams(detector="adwin", detector_params={"delta": 0.1})),
                (["x1"], DriftParams(detector="kswin", detector_params={"alpha": 0.01, "window_size": 40, "stat_size": 10}))]

    def _new_detector(self, key: str, field_name: str):
        kwargs = dict(self.params.detector_params)
        if "seed" in detector_parameters(self.params.detector) and "seed" not in kwargs:
            kwargs["seed"] = zlib.crc32(f"{key}\x00{field_name}".encode())
        return self.detector_class(**kwargs)

    def process(self, batch: Batch) -> list[Alert]:
        values = batch.matrix(self.fields)
        observed = ~np.isnan(values)
        keys, slots = batch.keys, batch.slots.tolist()
        alerts = []
        for row in np.flatnonzero(observed.any(axis=1)).tolist():
            drifted = []
            for col, field_name in enumerate(self.fields):
                if observed[row, col]:
                    entry = self.detectors.get((slots[row], field_name))
                    if entry is None:
                        entry = self.detectors[(slots[row], field_name)] = (keys[row], self._new_detector(keys[row], field_name))
                    detector = entry[1]
                    detector.update(float(values[row, col]))
                    if detector.drift_detected:
                        drifted.append(field_name)
            if drifted:
                alerts.append(
                    self.alert(
                        batch,
                        row,
                        score=float(len(drifted)),
                        severity=self.params.severity,
                        reason=f"{self.detector_class.__name__} detected a change in {', '.join(drifted)}",
                        fields=drifted,
                    )
                )
        return alerts

    def evict(self, slots: np.ndarray) -> None:
        for slot in slots.tolist():
            for field_name in self.fields:
                self.detectors.pop((slot, field_name), None)

    def snapshot(self) -> dict[str, Any]:
        return {
            "detectors": [
                {"slot": slot, "key": key, "field": field_name, "state": to_plain(detector)}
                for (slot, field_name), (key, detector) in self.detectors.items()
            ]
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.detectors = {}
        for entry in state["detectors"]:
            detector = self._new_detector(entry["key"], entry["field"])
            load_plain(detector, entry["state"])
            self.detectors[(int(entry["slot"]), entry["field"])] = (entry["key"], detector)

    def state_bytes(self) -> int:
        """The detectors' Python objects (:func:`operators.plain_state.object_bytes`), measured on the first
        ``SIZE_SAMPLE`` detectors and extrapolated: the gauge is refreshed often and a shard may hold many.
        river's ADWIN keeps its buckets in a native helper that ``sys.getsizeof`` does not see."""
        detectors = [detector for _, detector in itertools.islice(self.detectors.values(), SIZE_SAMPLE)]
        if not detectors:
            return sys.getsizeof(self.detectors)
        measured = sum(object_bytes(detector) for detector in detectors)
        return sys.getsizeof(self.detectors) + measured * len(self.detectors) // len(detectors)
