"""Per-entity drift detection on each field: a trend CUSUM (the default), ADWIN, Page-Hinkley or KSWIN.

One detector per (entity, field), fed every value in stream order. ``trend_cusum`` (:mod:`kernels.trend_cusum`)
watches each field's level and trend and says in which direction it moved; point it at the event fields
themselves, so that an incident's end is not a drift (on an outlier score, the score falling back looks like one).
ADWIN, Page-Hinkley and KSWIN are river's detectors and alarm at the same stream index as river's would
(``tests/test_drift.py`` compares them). The trend CUSUM, ADWIN and Page-Hinkley run as compiled loops over the
whole batch, their state in arrays across entities (:mod:`kernels.adwin`, :mod:`kernels.page_hinkley`); KSWIN,
which draws random samples and runs a Kolmogorov-Smirnov test, stays river's own detector, called per value.
Fields can be event fields or another operator's per-event score (``score:<operator>``). All fields that alarm on
the same event produce one alert, whose score is the number of alarming fields.

>>> from operators.event import Event, SourcePosition
>>> op = DriftOperator.from_config("drift", ["x"], DriftParams(detector="page_hinkley"))
>>> values = [0.0] * 100 + [10.0] * 20
>>> events = [Event("a", i, {"x": v}, SourcePosition(topic="t", partition=0, offset=i))
...           for i, v in enumerate(values)]
>>> [(a.source.offset, a.reason) for a in op.process(Batch.from_events(events))]
[(105, 'PageHinkley detected a change in x')]
>>> rng = np.random.default_rng(0)
>>> values = np.r_[rng.normal(size=300), rng.normal(size=100) - 4.0]
>>> events = [Event("a", i, {"x": float(v)}, SourcePosition(topic="t", partition=0, offset=i))
...           for i, v in enumerate(values)]
>>> op = DriftOperator.from_config("drift", ["x"], DriftParams())
>>> [(a.source.offset, a.reason, a.fields) for a in op.process(Batch.from_events(events))]
[(310, 'trend CUSUM: x drifted down (-3.4 standard deviations from its trend)', ['x'])]

References
----------
Bifet, A. and Gavaldà, R. (2007). Learning from time-changing data with adaptive windowing. *SDM*.

Raab, C., Heusinger, M. and Schleif, F.-M. (2020). Reactive soft prototype computing for concept drift
streams. *Neurocomputing* 416, 340-351 (KSWIN).

Page, E. S. (1954). Continuous inspection schemes. *Biometrika* 41(1/2), 100-115.

Holt, C. C. (2004). Forecasting seasonals and trends by exponentially weighted moving averages. *International
Journal of Forecasting* 20(1), 5-10.

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

from kernels.adwin import AdwinBank
from kernels.page_hinkley import PageHinkleyBank
from kernels.trend_cusum import TrendCusumBank
from kernels.state import Stateful
from operators.base import Operator
from operators.batch import Batch
from operators.event import Alert
from operators.params import ParamError, param
from operators.plain_state import load_plain, object_bytes, to_plain

SIZE_SAMPLE = 64  # KSWIN detectors measured by state_bytes
DETECTOR_NAMES = {"trend_cusum": "trend CUSUM", "adwin": "ADWIN", "kswin": "KSWIN", "page_hinkley": "PageHinkley"}


def _kswin_class():
    from river.drift import KSWIN  # imported on use: river's drift package pulls in scipy.stats (about 1 s)

    return KSWIN


def _detector_class(detector: str) -> type:
    return {"trend_cusum": TrendCusumBank, "adwin": AdwinBank, "page_hinkley": PageHinkleyBank}.get(detector) or _kswin_class()


def detector_parameters(detector: str) -> dict[str, inspect.Parameter]:
    """The keyword parameters the detector accepts (river's for the river three; the config check validates them)."""
    return dict(inspect.signature(_detector_class(detector)).parameters)


class KswinDetectors(Stateful):
    """river KSWIN detectors by id, with the interface of the compiled banks. Each draws its samples from a
    generator seeded by its entity key and field (stable across runs and restarts) unless a seed is given."""

    def __init__(self, **params: Any) -> None:
        self.params = params
        self.detectors: dict[int, tuple[str, Any]] = {}  # id -> (seed name, detector)
        self._new("")  # river checks values only when a detector is built: build one now

    def _new(self, seed_name: str):
        kswin = _kswin_class()
        return kswin(**{"seed": zlib.crc32(seed_name.encode()), **self.params})

    def update(self, ids: np.ndarray, values: np.ndarray, seed_names: Sequence[str]) -> np.ndarray:
        alarms = np.zeros(len(ids), dtype=np.bool_)
        for i, (detector_id, value) in enumerate(zip(ids.tolist(), values.tolist())):
            entry = self.detectors.get(detector_id)
            if entry is None:
                entry = self.detectors[detector_id] = (seed_names[i], self._new(seed_names[i]))
            entry[1].update(value)
            alarms[i] = entry[1].drift_detected
        return alarms

    def reset(self, ids: np.ndarray) -> None:
        for detector_id in ids.tolist():
            self.detectors.pop(detector_id, None)

    def snapshot(self) -> dict[str, Any]:
        return {"detectors": [{"id": detector_id, "seed_name": name, "state": to_plain(detector)}
                              for detector_id, (name, detector) in self.detectors.items()]}

    def restore(self, state: dict[str, Any]) -> None:
        self.detectors = {}
        for entry in state["detectors"]:
            detector = self._new(entry["seed_name"])
            load_plain(detector, entry["state"])
            self.detectors[int(entry["id"])] = (entry["seed_name"], detector)

    def state_bytes(self) -> int:
        """The detectors' Python objects (:func:`operators.plain_state.object_bytes`), measured on the first
        ``SIZE_SAMPLE`` detectors and extrapolated: the gauge is refreshed often and a shard may hold many."""
        sample = [detector for _, detector in itertools.islice(self.detectors.values(), SIZE_SAMPLE)]
        if not sample:
            return sys.getsizeof(self.detectors)
        measured = sum(object_bytes(detector) for detector in sample)
        return sys.getsizeof(self.detectors) + measured * len(self.detectors) // len(sample)


@dataclass
class DriftParams:
    """Parameters of :class:`DriftOperator`."""

    detector: Literal["trend_cusum", "adwin", "kswin", "page_hinkley"] = param(
        "trend_cusum", "drift detector: trend_cusum (a field's level or trend moved, and which way), adwin, kswin or "
        "page_hinkley (river's)", choices=("trend_cusum", "adwin", "kswin", "page_hinkley"))
    detector_params: dict[str, Any] = param({}, "the detector's parameters, named as in its constructor "
                                                "(kernels.trend_cusum.TrendCusumBank, or river's; checked against it); "
                                                "for kswin without seed, each entity and field gets a stable seed")
    severity: str = param("warning", "severity of drift alerts")


class DriftOperator(Operator):
    kind: ClassVar[str] = "drift"
    Params: ClassVar[type] = DriftParams
    entity_state: ClassVar[bool] = True

    def __init__(self, name: str, fields: Sequence[str], params: DriftParams) -> None:
        super().__init__(name, fields, params)
        accepted = detector_parameters(params.detector)
        for key in params.detector_params:
            if key not in accepted:
                close = difflib.get_close_matches(key, list(accepted), n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"{params.detector} accepts {', '.join(accepted)}"
                raise ParamError(f"detector_params.{key}", f"unknown {params.detector} parameter ({hint})")
        self.detector_name = DETECTOR_NAMES[params.detector]
        try:
            cls = KswinDetectors if params.detector == "kswin" else _detector_class(params.detector)
            self.detectors = cls(**params.detector_params)  # detector id = slot * len(fields) + field index
        except (TypeError, ValueError) as error:
            raise ParamError("detector_params", f"{self.detector_name} refuses them: {error}") from None

    @classmethod
    def contract_cases(cls) -> list[tuple[list[str], DriftParams]]:
        return [(["x0", "x1"], DriftParams(detector="trend_cusum", detector_params={"threshold": 5.0, "warmup": 10})),
                (["x0", "x1"], DriftParams(detector="page_hinkley", detector_params={"threshold": 5.0, "min_instances": 10})),
                (["x0"], DriftParams(detector="adwin", detector_params={"delta": 0.1})),
                (["x1"], DriftParams(detector="kswin", detector_params={"alpha": 0.01, "window_size": 40, "stat_size": 10}))]

    def process(self, batch: Batch) -> list[Alert]:
        values = batch.matrix(self.fields)
        rows, cols = np.nonzero(~np.isnan(values))  # row-major: each detector sees its values in stream order
        ids = batch.slots[rows] * len(self.fields) + cols
        if isinstance(self.detectors, KswinDetectors):
            keys = batch.keys
            names = [f"{keys[row]}\x00{self.fields[col]}" for row, col in zip(rows.tolist(), cols.tolist())]
            alarms = self.detectors.update(ids, values[rows, cols], names)
        else:
            alarms = self.detectors.update(ids, values[rows, cols])
        alerts = []
        alarm_values = np.flatnonzero(alarms)
        directions = getattr(self.detectors, "directions", None)  # the trend CUSUM says which way each field moved
        for row in np.unique(rows[alarm_values]).tolist():
            mine = alarm_values[rows[alarm_values] == row]
            drifted = [self.fields[col] for col in cols[mine].tolist()]
            if directions is None:
                reason = f"{self.detector_name} detected a change in {', '.join(drifted)}"
            else:
                moves = [f"{field} drifted {'up' if directions[i] > 0 else 'down'} ({self.detectors.deviations[i]:+.1f} "
                         "standard deviations from its trend)" for field, i in zip(drifted, mine.tolist())]
                reason = f"{self.detector_name}: {'; '.join(moves)}"
            alerts.append(self.alert(batch, row, score=float(len(drifted)), severity=self.params.severity,
                                     reason=reason, fields=drifted))
        return alerts

    def evict(self, slots: np.ndarray) -> None:
        n = len(self.fields)
        self.detectors.reset((slots[:, None] * n + np.arange(n)).ravel())

    def snapshot(self) -> dict[str, Any]:
        return {"detectors": self.detectors.snapshot()}

    def restore(self, state: dict[str, Any]) -> None:
        self.detectors.restore(state["detectors"])

    def state_bytes(self) -> int:
        return self.detectors.state_bytes()
