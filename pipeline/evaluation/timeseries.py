"""Time-series anomaly detection metrics: PATE and PATE-F1, VUS-ROC and VUS-PR (TSB-UAD's and, in :func:`vus_pr`,
TSB-AD 1.5's), point-adjusted F1, and point-wise ROC-AUC and average precision; TSB-AD's sliding-window choice
(:func:`sliding_window`).

**PATE** (Ghorbani, Reinders and Tax, KDD 2024) scores detections by their proximity to the labelled events. Around
each event A_k = [s_k, e_k] (a maximal run of labelled points, centre c_k) lie a pre-buffer [B_k, s_k − 1] of at most
E points and a post-buffer [e_k + 1, P_k] of at most D points; a post-buffer ends before the next event starts, and a
pre-buffer starts after the previous post-buffer (the earlier event's buffer wins). A predicted point counts:

* inside an event: TP 1;
* in a post-buffer: TP w and FP 1 − w, w = (P_k − x)/(P_k − c_k) (falling to 0 at the buffer's end), whether or not
  the event itself was detected;
* in a pre-buffer: TP w and FP 1 − w, w = (x − B_k)/(c_k − B_k), but only if the event has a detected point;
  otherwise FP 1;
* elsewhere: FP 1.

A missed event counts FN L_k. In a partially detected event, with δ the length of the first detected run inside it
(the earliest predicted run that reaches it), a missed point p counts FN 1 if p ≤ s_k + δ, else
1 − Σ_(y=s_k..s_k+δ) |p − y| / Σ_(y=s_k..e_k) |e_k − y| (a missed onset costs fully, a missed tail less).
Precision and recall follow (0 when undefined). For continuous scores, PATE is the trapezoidal area under the
precision-recall curve over thresholds (the distinct scores, optionally thinned to where the true-positive count
changes, then optionally 250 interpolated percentiles), starting at (R 0, P 1) and keeping only points whose recall
does not fall, averaged over the buffer grid: E and D each in ``linspace(0, max, splits + 1)`` (with zero) or
``linspace(max / splits, max, splits)``, as integers. PATE-F1 is the F1 of a binary prediction, averaged over the grid.

This follows the reference implementation (PyPI ``PATE`` 0.1.1) in every rule above, checked against its values in
``tests/test_timeseries_metrics.py``; it is written per threshold as array operations over points and events.

**Point-adjusted F1** marks a whole labelled event detected when any of its points is predicted, then takes the
point-wise F1; it inflates most detectors, which is why PATE exists.

>>> y = np.zeros(500, dtype=int); y[40:60] = 1
>>> s = np.zeros(500); s[30:50] = 1
>>> round(pate(y, s, 20, 20, big_data=False, include_zero=False), 6), round(pate_f1(y, s, 20, 20, include_zero=False), 6)
(0.759342, 0.751309)
>>> point_adjusted_f1(s, y)
0.8

References
----------
Ghorbani, R., Reinders, M. J. T. and Tax, D. M. J. (2024). PATE: proximity-aware time series anomaly evaluation. *KDD*.

Xu, H. et al. (2018). Unsupervised anomaly detection via variational auto-encoder for seasonal KPIs in web
applications. *WWW* (point adjustment).
"""
from __future__ import annotations

import numpy as np


def runs(values: np.ndarray) -> np.ndarray:
    """The maximal runs of positive values as [start, end] rows (inclusive).

    >>> runs(np.array([0, 1, 1, 0, 1])).tolist()
    [[1, 2], [4, 4]]
    """
    positive = np.r_[0, (np.asarray(values) > 0).astype(np.int8), 0]
    edges = np.diff(positive)
    return np.column_stack([np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1])


class _Zones:
    """Every point's zone for one (E, D) pair: its event, and whether it is in the pre-buffer, the event or the
    post-buffer, with the buffer weights."""

    def __init__(self, events: np.ndarray, n: int, early: int, delayed: int) -> None:
        self.events, self.n = events, n
        starts, ends = events[:, 0], events[:, 1]
        following = np.r_[starts[1:], n]
        post_end = np.minimum(ends + delayed, following - 1)
        pre_start = np.maximum.reduce([np.zeros(len(events), dtype=np.int64), starts - early, np.r_[-1, post_end[:-1]] + 1])
        centre = (starts + ends) / 2
        self.event = np.full(n, -1, dtype=np.int64)
        self.kind = np.zeros(n, dtype=np.int8)  # 0 outside, 1 pre-buffer, 2 event, 3 post-buffer
        self.weight = np.zeros(n)
        for k in range(len(events)):
            pre = np.arange(pre_start[k], starts[k])
            post = np.arange(ends[k] + 1, post_end[k] + 1)
            self.event[pre], self.kind[pre] = k, 1
            self.weight[pre] = (pre - pre_start[k]) / (centre[k] - pre_start[k])
            self.event[starts[k]:ends[k] + 1], self.kind[starts[k]:ends[k] + 1] = k, 2
            self.event[post], self.kind[post] = k, 3
            self.weight[post] = (post_end[k] - post) / (post_end[k] - centre[k])

    def precision_recall(self, predicted: np.ndarray) -> tuple[float, float]:
        events, kind, event = self.events, self.kind, self.event
        starts, ends = events[:, 0], events[:, 1]
        hit = predicted & (kind == 2)
        detected = np.zeros(len(events), dtype=bool)
        detected[np.unique(event[hit])] = True
        pre = predicted & (kind == 1)
        pre_credited = pre & detected[np.maximum(event, 0)]
        post = predicted & (kind == 3)
        tp = hit.sum() + self.weight[pre_credited].sum() + self.weight[post].sum()
        fp = (predicted & (kind == 0)).sum() + (pre & ~pre_credited).sum() + (1 - self.weight[pre_credited]).sum() \
            + (1 - self.weight[post]).sum()
        fn = float((ends - starts + 1)[~detected].sum())
        if detected.any():
            fn += self._partial_misses(predicted, starts[detected], ends[detected])
        precision = tp / (tp + fp) if tp + fp > 0 else 0.0
        recall = tp / (tp + fn) if tp + fn > 0 else 0.0
        return float(precision), float(recall)

    def _partial_misses(self, predicted: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> float:
        """FN weight of the missed points of detected events."""
        n = self.n
        # The next unpredicted point at or after each point (n if none).
        gaps = np.flatnonzero(~predicted)
        next_gap = np.r_[gaps, n][np.searchsorted(gaps, np.arange(n))]
        total = 0.0
        for start, end in zip(starts.tolist(), ends.tolist()):
            inside = predicted[start:end + 1]
            if inside.all():
                continue
            first = start + int(np.argmax(inside))
            delta = min(int(next_gap[first]) - 1, end) - first + 1  # the first detected run, clipped to the event
            missed = start + np.flatnonzero(~inside)
            border = start + delta
            late = missed[missed > border]
            total += len(missed) - len(late)
            span = end - start + 1
            denominator = span * (span - 1) / 2
            if len(late):
                distance = (delta + 1) * (late - start - delta / 2.0)  # Σ_(y=start..border) (p − y)
                total += float(np.sum(1 - (distance / denominator if denominator > 0 else 0.0)))
        return total


def _buffers(maximum: int, splits: int, include_zero: bool) -> np.ndarray:
    if include_zero:
        return np.linspace(0, maximum, num=splits + 1, dtype=int)
    return np.linspace(maximum / splits, maximum, num=splits, dtype=int)


def _thresholds(y_true: np.ndarray, y_score: np.ndarray, drop_intermediate: bool, big_data: bool, count: int) -> np.ndarray:
    """The distinct scores in decreasing order (optionally where the true-positive count changes, then ``count``
    interpolated percentiles)."""
    thresholds, true_positives, _ = _curve(y_true, y_score)
    if drop_intermediate and len(true_positives) > 2:
        keep = np.r_[True, np.logical_or(np.diff(true_positives[:-1]), np.diff(true_positives[1:])), True]
        thresholds = thresholds[keep]
    if big_data:
        thresholds = np.percentile(thresholds, np.linspace(100, 0, count))
    return thresholds


def pate(y_true, y_score, e_buffer: int = 100, d_buffer: int = 100, *, drop_intermediate: bool = True,
         big_data: bool = True, thresholds: int = 250, splits: int = 1, include_zero: bool = True) -> float:
    """PATE of continuous scores (module docstring); the reference's defaults."""
    y_true, y_score = (np.asarray(y_true) > 0).astype(np.int64), np.asarray(y_score, dtype=np.float64)
    events = runs(y_true)
    levels = _thresholds(y_true, y_score, drop_intermediate, big_data, thresholds)
    areas = []
    for early in _buffers(e_buffer, splits, include_zero):
        for delayed in _buffers(d_buffer, splits, include_zero):
            zones = _Zones(events, len(y_true), int(early), int(delayed))
            curve = [zones.precision_recall(y_score >= level) for level in levels]
            precision = np.r_[1.0, [p for p, _ in curve]]
            recall = np.r_[0.0, [r for _, r in curve]]
            kept = _non_decreasing(recall)
            areas.append(float(np.trapezoid(precision[kept], recall[kept])))
    return float(np.mean(areas))


def _non_decreasing(recall: np.ndarray) -> np.ndarray:
    """Keep a point when its recall is at least that of the last kept point. Equal recalls summed in another order can
    differ in the last bit, so "at least" allows 1e-12: otherwise a rounding error would drop curve points (the
    reference's own sums keep them, bench/pate_crosscheck.py)."""
    kept = np.zeros(len(recall), dtype=bool)
    last = -1.0
    for i, value in enumerate(recall.tolist()):
        if value >= last - 1e-12:
            kept[i], last = True, value
    return kept


def pate_f1(y_true, y_pred, e_buffer: int = 100, d_buffer: int = 100, *, splits: int = 1, include_zero: bool = True) -> float:
    """PATE-F1 of a binary prediction (positive where ``y_pred`` > 0), averaged over the buffer grid."""
    y_true, predicted = (np.asarray(y_true) > 0).astype(np.int64), np.asarray(y_pred) > 0
    events = runs(y_true)
    scores = []
    for early in _buffers(e_buffer, splits, include_zero):
        for delayed in _buffers(d_buffer, splits, include_zero):
            precision, recall = _Zones(events, len(y_true), int(early), int(delayed)).precision_recall(predicted)
            scores.append(2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0)
    return float(np.mean(scores))


def _curve(y_true, y_score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """At each distinct score, highest first: the score, and the true and false positives at or above it."""
    labels, score = (np.asarray(y_true) > 0).astype(np.int64), np.asarray(y_score, dtype=np.float64)
    order = np.argsort(score, kind="mergesort")[::-1]
    cut = np.r_[np.flatnonzero(np.diff(score[order])), len(score) - 1]
    tps = np.cumsum(labels[order])[cut]
    return score[order][cut], tps, cut + 1 - tps


def roc_auc_rows(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """ROC-AUC of every row of a (rows, samples) score matrix against one label vector (Mann-Whitney, ties counted as
    one half: the trapezoidal ROC area, as scikit-learn's ``roc_auc_score``)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=1)
    positive = np.asarray(labels) == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return (ranks[:, positive].sum(1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def roc_auc(y_true, y_score) -> float:
    """Point-wise ROC-AUC."""
    return float(roc_auc_rows(np.asarray(y_score, dtype=np.float64)[None], (np.asarray(y_true) > 0).astype(int))[0])


def average_precision(y_true, y_score) -> float:
    """Point-wise average precision, Σ (R_i − R_(i−1)) P_i over the distinct scores, as scikit-learn's."""
    _, tps, fps = _curve(y_true, y_score)
    return float(np.sum(np.diff(np.r_[0, tps / tps[-1]]) * tps / (tps + fps)))


def _soft_labels(labels: np.ndarray, window: int) -> np.ndarray:
    """The labels widened by ``window // 2`` points on each side of every event, with weights √(1 − distance/window)
    (from the event's last point on the right, as the reference does), capped at 1."""
    soft = labels.astype(np.float64)
    n = len(soft)
    for start, end in runs(labels).tolist():
        after = np.arange(end, min(end + window // 2, n))
        soft[after] += np.sqrt(1 - (after - end) / window)
        before = np.arange(max(start - window // 2, 0), start)
        soft[before] += np.sqrt(1 - (start - before) / window)
    return np.minimum(soft, 1.0)


def vus(y_true, y_score, window: int) -> tuple[float, float]:
    """VUS-ROC and VUS-PR (Paparrizos et al., 2022) as the reference's ``get_range_vus_roc(score, labels, window)``
    computes them: range ROC and PR areas over 250 score thresholds, for soft labels widened by ℓ = 0 .. 2·window,
    averaged over ℓ."""
    labels = (np.asarray(y_true) > 0).astype(np.int64)
    score = np.asarray(y_score, dtype=np.float64)
    n, positives = len(score), labels.sum()
    levels = -np.sort(-score)[np.linspace(0, n - 1, 250).astype(int)]
    predicted = score[None, :] >= levels[:, None]  # [thresholds, points]
    counts = predicted.sum(axis=1)
    rocs, prs = [], []
    for width in range(2 * window + 1):
        soft = _soft_labels(labels, width)
        product = predicted * soft[None, :]
        tp = product.sum(axis=1)
        expected = (positives + soft.sum()) / 2
        recall = np.minimum(tp / expected, 1.0)
        segments = runs(soft)
        cumulative = np.concatenate([np.zeros((len(levels), 1)), np.cumsum(product, axis=1)], axis=1)
        found = ((cumulative[:, segments[:, 1] + 1] - cumulative[:, segments[:, 0]]) > 0).sum(axis=1)
        tpr = np.r_[0.0, recall * found / len(segments), 1.0]
        fpr = np.r_[0.0, (counts - tp) / (n - expected), 1.0]
        precision = np.r_[1.0, tp / counts]
        rocs.append(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
        prs.append(np.sum((tpr[1:-1] - tpr[:-2]) * (precision[1:] + precision[:-1]) / 2))
    return float(np.mean(rocs)), float(np.mean(prs))


def point_adjusted_f1(y_pred, y_true) -> float:
    """F1 after point adjustment: a labelled event with any predicted point counts as wholly predicted."""
    predicted, labels = np.asarray(y_pred) > 0, np.asarray(y_true) > 0
    adjusted = predicted.copy()
    for start, end in runs(labels).tolist():
        if predicted[start:end + 1].any():
            adjusted[start:end + 1] = True
    tp = float((adjusted & labels).sum())
    precision = tp / adjusted.sum() if adjusted.sum() else 0.0
    recall = tp / labels.sum() if labels.sum() else 0.0
    return float(2 * precision * recall / (precision + recall)) if precision + recall > 0 else 0.0


def vus_pr(y_true, y_score, window: int) -> float:
    """VUS-PR as TSB-AD 1.5 computes it (Liu and Paparrizos, NeurIPS 2024: ``get_metrics(score, labels,
    slidingWindow=window)['VUS-PR']``, its ``RangeAUC_volume_opt``), which is not what :func:`vus` (TSB-UAD's
    ``get_range_vus_roc``) computes: the soft-label width ℓ runs over 0 .. window (not 2·window), a label widens over
    [s − ℓ//2, e + ℓ//2] (right side from e + 1), the expected positives are P + (soft TP − predicted event points)/2
    (they count only the predicted part of the widening), the existence ratio counts the merged widened events, and
    the area is the step sum Σ ΔTPR·precision (no trapezoid), over the same 250 score thresholds.

    Hand-written because no numpy-only library computes it and TSB-AD pins its own stack (numpy < 2, torch); the
    reference's loops over widths, thresholds and events become, per width, a cumulative sum of the soft labels in
    score order and the widened events' maximum scores. ``bench/tsbad_crosscheck.py`` checks it against TSB-AD.

    >>> y = np.zeros(200, dtype=int); y[50:60] = 1
    >>> s = np.zeros(200); s[45:58] = 1
    >>> round(vus_pr(y, s, 20), 6)  # TSB-AD 1.5: 0.8203411900972998
    0.820341
    """
    labels = np.asarray(y_true) > 0
    score = np.asarray(y_score, dtype=np.float64)
    n, events = len(score), runs(labels)
    if not len(events):
        raise ValueError("VUS-PR needs at least one labelled point")
    order = np.argsort(-score, kind="stable")
    ranked = score[order]
    levels = ranked[np.linspace(0, n - 1, 250).astype(int)]
    counts = np.searchsorted(-ranked, -levels, side="right")  # points at or above each threshold
    positives = int(labels.sum())
    event_hits = np.cumsum(labels[order])[counts - 1]
    starts, ends = events[:, 0], events[:, 1]
    padded = np.r_[score, -np.inf]
    areas = []
    for width in range(int(window) + 1):
        half = width // 2
        soft = labels.astype(np.float64)
        if half:
            distance = np.tile(np.arange(1, half + 1), len(events))
            weight = np.sqrt(1 - distance / width)
            after, before = np.repeat(ends, half) + distance, np.repeat(starts, half) - distance
            np.add.at(soft, after[after < n], weight[after < n])
            np.add.at(soft, before[before >= 0], weight[before >= 0])
            soft = np.minimum(soft, 1.0)
        tp = np.cumsum(soft[order])[counts - 1]
        expected = positives + (tp - event_hits) / 2
        # The widened events, merged where they overlap; any predicted point in one detects it.
        first = np.r_[0, np.flatnonzero(starts[1:] - ends[:-1] > 2 * half) + 1]
        last = np.r_[first[1:] - 1, len(events) - 1]
        bounds = np.column_stack([np.maximum(starts[first] - half, 0), np.minimum(ends[last] + half, n - 1) + 1])
        peaks = np.maximum.reduceat(padded, bounds.ravel())[::2]
        found = (peaks[None, :] >= levels[:, None]).sum(axis=1)
        tpr = np.minimum(tp / expected, 1.0) * found / len(first)
        areas.append(float(np.dot(np.diff(np.r_[0.0, tpr]), tp / counts)))
    return float(np.mean(areas))


def _fft_length(target: int) -> int:
    """The least 2^a·3^b·5^c ≥ target: the padded length statsmodels' FFT autocovariance uses."""
    best, five = 1 << (target - 1).bit_length(), 1
    while five < best:
        product = five
        while product < best:
            length = product
            while length < target:
                length *= 2
            best, product = min(best, length), product * 3
        five *= 5
    return best


def autocorrelation(values: np.ndarray, lags: int) -> np.ndarray:
    """Sample autocorrelation at lags 0 .. ``lags`` (fewer for a short series): statsmodels'
    ``acf(values, nlags=lags, fft=True)``, the biased autocovariance through a zero-padded FFT over its own
    length (NaN for a constant series)."""
    centred = np.asarray(values, dtype=np.float64) - np.mean(values)
    n = len(centred)
    spectrum = np.fft.fft(centred, n=_fft_length(2 * n + 1))
    covariance = (np.fft.ifft(spectrum * np.conjugate(spectrum))[:n] / (n * np.ones(n))).real
    with np.errstate(divide="ignore", invalid="ignore"):
        return covariance[:lags + 1] / covariance[0]


def sliding_window(values: np.ndarray, rank: int = 1) -> int:
    """The period TSB-AD uses as VUS's sliding window and its detectors' window: ``find_length_rank(values, rank)``
    of ``TSB_AD.utils.slidingWindows``. Of the autocorrelation's local maxima at lags 3 .. 400 (first 20,000 points),
    the highest (rank 1), or the highest at a longer lag than that one (rank 2; rank 3 repeats TSB-AD's indexing);
    125 when there is none or it lies outside lags 6 .. 303 (noise, a constant series). A multivariate series uses its
    first channel, as TSB-AD's benchmark passes it.

    >>> sliding_window(np.sin(2 * np.pi * np.arange(1000) / 50))
    50
    """
    data = np.asarray(values, dtype=np.float64)
    data = data.reshape(len(data), -1)[:, 0] if data.ndim > 1 else data
    if rank == 0:
        return 1
    correlation = autocorrelation(data[:20000], 400)[3:]
    peaks = np.flatnonzero((correlation[1:-1] > correlation[:-2]) & (correlation[1:-1] > correlation[2:])) + 1
    if not len(peaks):
        return 125
    ranked = np.argsort(correlation[peaks])[::-1]  # TSB-AD's order, ties included
    choice = ranked[0]
    later = [i for i in ranked[1:] if i > ranked[0]]
    if rank == 2 and later:
        choice = later[0]
    if rank == 3:
        if not later:
            return 125
        choice = next((i for i in ranked[later[0]:] if i > ranked[later[0]]), ranked[0])
    lag = int(peaks[choice])
    return lag + 3 if 3 <= lag <= 300 else 125
