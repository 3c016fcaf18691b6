"""Severity alignment, as MAD-Bench measures it: do larger anomalies get larger scores?

Every event gets an ordinal severity label: 0 for normal events, the incident's grade (1 to 3) for the
event at the onset of a spike or level shift. Events later inside an incident window, and all events of
gradual drifts, are left out: their true severity is not one number. The labels are compared with the
scores by Kendall's tau-b (``scipy.stats.kendalltau``, as MAD-Bench's ``get_performance.py``) and by
Harrell's C-index with the severity as the "time" (``lifelines.utils.concordance_index(severity, score)``
semantics: pairs of different severity are comparable, a pair is concordant when the more severe event
has the higher score, ties in score count one half).

>>> round(concordance_index([0, 0, 1, 2], [0.1, 0.3, 0.2, 0.9]), 4)
0.8
>>> round(kendall_tau_b([0, 0, 1, 2], [0.1, 0.3, 0.2, 0.9]), 4)
0.5477
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np
from scipy.stats import kendalltau, rankdata

ONSET_KINDS = ("spike", "level_shift")


class GradedIncident(Protocol):
    """What severity labelling reads of an incident (the demo's ``Incident`` has these attributes)."""

    @property
    def key(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def grade(self) -> int: ...
    @property
    def start_ms(self) -> int: ...
    @property
    def end_ms(self) -> int: ...


def kendall_tau_b(severity: Sequence[float], score: Sequence[float]) -> float:
    return float(kendalltau(severity, score, variant="b").statistic)


def concordance_index(severity: Sequence[float], score: Sequence[float]) -> float:
    """Share of pairs of different severity ordered like their scores (score ties count 1/2)."""
    severity, score = np.asarray(severity, dtype=float), np.asarray(score, dtype=float)
    concordant = comparable = 0.0
    for level in np.unique(severity)[1:]:
        # Mann-Whitney U of this level against every lower one counts its concordant pairs exactly.
        mask = severity <= level
        ranks = rankdata(score[mask])
        upper = severity[mask] == level
        n_upper, n_lower = int(upper.sum()), int((~upper).sum())
        concordant += ranks[upper].sum() - n_upper * (n_upper + 1) / 2
        comparable += n_upper * n_lower
    return float(concordant / comparable) if comparable else float("nan")


def severity_labels(incidents: Iterable[GradedIncident], events: Sequence[tuple[str, int]]) -> np.ndarray:
    """Per (key, event-time ms): 0 normal, 1-3 the grade of an onset event, -1 excluded."""
    onsets: dict[tuple[str, int], int] = {}
    windows: dict[str, list[tuple[int, int]]] = {}
    for incident in incidents:
        windows.setdefault(incident.key, []).append((incident.start_ms, incident.end_ms))
        if incident.kind in ONSET_KINDS:
            onsets[(incident.key, incident.start_ms)] = incident.grade
    labels = np.zeros(len(events), dtype=np.int64)
    for row, (key, ts_ms) in enumerate(events):
        grade = onsets.get((key, ts_ms))
        if grade is not None:
            labels[row] = grade
        elif any(start <= ts_ms <= end for start, end in windows.get(key, ())):
            labels[row] = -1
    return labels


def alignment(labels: np.ndarray, scores: np.ndarray) -> dict:
    """tau-b and C-index (all labelled events; tau-b also among anomalies alone) and the events per level."""
    used = (labels >= 0) & np.isfinite(scores)
    severity, score = labels[used], scores[used]
    anomalous = severity > 0
    return {
        "kendall_tau_b": kendall_tau_b(severity, score),
        "c_index": concordance_index(severity, score),
        # Among anomalies only: does a stronger incident get a stronger score?
        "kendall_tau_b_anomalies": kendall_tau_b(severity[anomalous], score[anomalous]),
        "events_per_level": {int(level): int((severity == level).sum()) for level in np.unique(severity)},
    }
