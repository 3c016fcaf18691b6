"""Per-entity Half-Space Trees outlier scoring with river's ``anomaly.HalfSpaceTrees``.

Every entity (event ``key``) gets its own river ``HalfSpaceTrees``; scores are exactly river's
``score_one`` (1 - normalised reference mass, in [0, 1], higher is more anomalous), computed by river
itself on the features described below.

* **Features and limits.** river assumes features in [0, 1]. Each field is therefore min-max scaled by
  its limits ``[low, high]`` to ``(value - low) / (high - low)`` and river sees the scaled values with its
  default unit limits. (Passing raw limits to river instead would make river pick split features with
  probability proportional to the width of their limits, so a field with a large raw range would take
  nearly all splits.) A field listed in ``limits`` uses those limits for every entity; for a field not
  listed (the default: all of them) each entity learns its own limits from its first ``window_size``
  usable events: ``[min - m, max + m]`` with ``m = limits_margin * (max - min)`` (for a constant field
  ``m = |value| / 2``, or 1/2 for 0). river's own first window scores nothing either, so this costs no
  extra warm-up: the trees are built when the window is complete and learn the buffered events in order.
  Values outside the limits are valid; they fall in the outermost cells. Limits ``[0, 1]`` leave values
  unchanged, bit for bit.
* **Exactness.** An entity's score sequence equals, bit for bit, that of
  ``river.anomaly.HalfSpaceTrees(n_trees, height, window_size, seed=entity_seed(seed, key))`` fed the
  entity's usable events, scaled as above, in stream order, with ``score_one`` before ``learn_one``
  (``order = "score_then_learn"``, the causal default) or after it (``"learn_then_score"``, the order of
  river's documented example). Where river would return its placeholder 0 (its first window is not
  complete), the score is NaN, so alert calibration never sees it.
* **Seeds.** With ``per_entity_seed`` (the default) an entity's trees come from a seed derived from
  (``seed``, key) by blake2b (:func:`entity_seed`), stable across processes; otherwise every entity uses
  ``seed`` itself, as a single river model would (and, since river sees unit limits, all entities then
  share the same splits).
* **Missing values.** An event whose fields are not all finite numbers (absent, text, NaN, infinite)
  scores NaN and is not learned.
* **State.** A snapshot stores each entity's trees as arrays (split field, threshold, both masses per
  node in depth-first order) plus its limits and window position, or the buffered events of an entity
  whose trees are not built yet; restore rebuilds river's node objects exactly. No pickling.
* **Memory.** river keeps every tree node as a Python object: about 1.1 MB per entity with the default
  10 trees of height 8 (5,110 nodes), about a quarter of that with height 6.

River's documented example (``anomaly.HalfSpaceTrees`` docstring, river 0.26.1): three warm-up events,
then learn-then-score over X.

>>> from operators.event import Event, SourcePosition
>>> params = HalfSpaceTreesParams(n_trees=5, height=3, window_size=3, seed=42, per_entity_seed=False,
...                               limits={"x": [0.0, 1.0]}, order="learn_then_score")
>>> op = HalfSpaceTreesOperator.from_config("hst", ["x"], params)
>>> X = [0.5, 0.45, 0.43, 0.44, 0.445, 0.45, 0.0]
>>> batch = Batch.from_events([Event("a", i, {"x": x}, SourcePosition(file="f", line=i)) for i, x in enumerate(X[:3] + X)])
>>> _ = op.process(batch)
>>> [round(s, 3) for s in batch.scores["hst"][3:].tolist()]
[0.107, 0.071, 0.107, 0.107, 0.107, 0.071, 0.853]
>>> op.explain(batch, len(batch) - 1)
('x=0 lies where the reference window is sparse: isolated by x in 5 of 5 trees (score 0.853)', ['x'])

References
----------
Tan, S. C., Ting, K. M. and Liu, T. F. (2011). Fast anomaly detection for streaming data. *IJCAI*, 1511-1516.

Montiel, J. et al. (2021). River: machine learning for streaming data in Python. *JMLR* 22(110), 1-8.
"""
from __future__ import annotations

import gc
import hashlib
import math
import sys
from dataclasses import dataclass
from typing import Any, ClassVar, Literal
from collections.abc import Sequence

import numpy as np
from river.anomaly import HalfSpaceTrees
from river.tree.padded import PaddedBranch, PaddedLeaf

from operators.alerting import AlertingParams
from operators.base import ScoringOperator
from operators.batch import Batch
from operators.guardrails import GuardrailParams
from operators.params import ParamError, param
from operators.plain_state import object_bytes

ORDERS = ("score_then_learn", "learn_then_score")
_HUGE = 1e307  # learned limits are clipped here, so that high - low stays finite


@dataclass
class HalfSpaceTreesParams:
    """Parameters of :class:`HalfSpaceTreesOperator`."""

    n_trees: int = param(10, "river's n_trees: trees per entity", min=1, max=1000)
    height: int = param(8, "river's height: a tree of height h has 2**(h+1) - 1 nodes", min=1, max=20)
    window_size: int = param(250, "river's window_size: masses are counted over windows of this many events per entity",
                             min=1, unit="events")
    seed: int = param(0, "seed of the trees' random splits", min=0)
    per_entity_seed: bool = param(True, "derive each entity's seed from (seed, key); false: every entity uses seed")
    limits: dict[str, list[float]] = param({}, "field = [low, high]: the range scaled to [0, 1] for every entity "
                                               "(fields not listed get per-entity limits from their first window)")
    limits_margin: float = param(1.0, "how far learned limits extend beyond the first window's range, as a fraction of "
                                      "that range (1: the range is the middle third, close to Tan et al.'s work ranges)",
                                 min=0.0, max=1e6)
    order: Literal["score_then_learn", "learn_then_score"] = param(
        "score_then_learn", "score_then_learn (causal) or learn_then_score (river's documented example)", choices=ORDERS)
    alerting: AlertingParams = param(AlertingParams(), "the false-alarm budget and severity levels")
    guardrails: GuardrailParams = param(GuardrailParams(), "direction, minimum deviation and valid range of an alert")


def entity_seed(seed: int, key: str) -> int:
    """The river seed of an entity's trees, stable across processes (unlike Python's salted ``hash``).

    >>> entity_seed(0, "host-1"), entity_seed(0, "host-1") == entity_seed(1, "host-1")
    (5812418795885238773, False)
    """
    digest = hashlib.blake2b(f"{seed}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def learned_limits(values: Sequence[float], margin: float) -> tuple[float, float]:
    """Limits of one field from an entity's first window of finite values.

    >>> learned_limits([2.0, 4.0, 3.0], 0.5), learned_limits([5.0, 5.0], 0.5), learned_limits([0.0], 0.0)
    ((1.0, 5.0), (2.5, 7.5), (-0.5, 0.5))
    """
    low, high = min(values), max(values)
    span = high - low
    pad = margin * span if span > 0.0 else 0.5 * (abs(low) or 1.0)
    low, high = max(low - pad, -_HUGE), min(high + pad, _HUGE)
    if not (high > low and math.isfinite(high - low)):  # only for magnitudes near the float limit
        low, high = -_HUGE, _HUGE
    return low, high


class _Entity:
    """One key's state: its river model (None until its limits are known) or its buffered events."""

    __slots__ = ("key", "model", "limits", "low", "width", "pending")

    def __init__(self, key: str) -> None:
        self.key = key
        self.model: HalfSpaceTrees | None = None
        self.limits: list[tuple[float, float]] = []
        self.low: list[float] = []
        self.width: list[float] = []
        self.pending: list[list[float]] = []


class HalfSpaceTreesOperator(ScoringOperator):
    Params: ClassVar[type] = HalfSpaceTreesParams
    entity_state: ClassVar[bool] = True

    def __init__(self, name: str, fields: Sequence[str], params: HalfSpaceTreesParams) -> None:
        super().__init__(name, fields, params)
        if not self.fields:
            raise ValueError("HalfSpaceTrees needs at least one field")
        unknown = sorted(set(params.limits) - set(self.fields))
        if unknown:
            raise ParamError(f"limits.{unknown[0]}", "given for a field the operator does not read")
        self.fixed: dict[int, tuple[float, float]] = {}
        for col, name_ in enumerate(self.fields):
            if name_ in params.limits:
                bounds = [float(b) for b in params.limits[name_]]
                if len(bounds) != 2 or not (math.isfinite(bounds[0]) and math.isfinite(bounds[1]) and bounds[0] < bounds[1]):
                    raise ParamError(f"limits.{name_}", f"must be [low, high] with finite low < high, got {params.limits[name_]}")
                self.fixed[col] = (bounds[0], bounds[1])
        # Trees are built once the limits are known: at the first event, or after a window when some are learned.
        self._build_after = 1 if len(self.fixed) == len(self.fields) else params.window_size
        self._learn_first = params.order == "learn_then_score"
        self.entities: dict[int, _Entity] = {}  # by entity slot
        # Per row of the batch being processed: [entity, scaled x, isolating splits (None: not frozen yet)].
        self._rows: list[list | None] = []
        self._unexplained: dict[int, list[int]] = {}  # id(entity) -> its scored rows whose splits are not frozen yet
        self._model_bytes: int | None = None

    @classmethod
    def contract_cases(cls) -> list[tuple[list[str], HalfSpaceTreesParams]]:
        alerting = AlertingParams(window=50, warmup=10, tail=5)
        return [(["x0", "x1"], HalfSpaceTreesParams(n_trees=3, height=3, window_size=10, alerting=alerting)),
                (["x0", "x2"], HalfSpaceTreesParams(n_trees=3, height=3, window_size=10, order="learn_then_score",
                                                    limits={"x0": [-20.0, 150.0]}, alerting=alerting))]

    # ---- scoring ----

    def score(self, batch: Batch) -> np.ndarray:
        values = batch.matrix(self.fields)
        usable = np.isfinite(values).all(axis=1)
        rows = values.tolist()
        slots, keys = batch.slots.tolist(), batch.keys
        scores = np.full(len(batch), np.nan)
        self._rows = [None] * len(batch)
        self._unexplained = {}
        entities = self.entities
        for i in np.flatnonzero(usable).tolist():
            entity = entities.get(slots[i])
            if entity is None:
                entity = entities[slots[i]] = _Entity(keys[i])
            raw = rows[i]
            x = None if entity.model is None else self._scaled(entity, raw)  # limits known: scale once
            if self._learn_first:
                self._learn(entity, raw, x)
            model = entity.model
            if model is not None and not model._first_window:
                if x is None:
                    x = self._scaled(entity, raw)
                scores[i] = model.score_one(x)
                self._rows[i] = [entity, x, None]
                self._unexplained.setdefault(id(entity), []).append(i)
            if not self._learn_first:
                self._learn(entity, raw, x)
        return scores

    def _scaled(self, entity: _Entity, raw: list[float]) -> dict[str, float]:
        return {name: (value - low) / width for name, value, low, width in zip(self.fields, raw, entity.low, entity.width)}

    def _learn(self, entity: _Entity, raw: list[float], x: dict[str, float] | None = None) -> None:
        model = entity.model
        if model is None:
            entity.pending.append(raw)
            if len(entity.pending) >= self._build_after:
                self._build(entity)
            return
        if model.counter + 1 == model.window_size:  # this event completes the window: reference masses change
            self._freeze_explanations(entity)
        model.learn_one(self._scaled(entity, raw) if x is None else x)

    def _new_model(self, key: str) -> HalfSpaceTrees:
        p = self.params
        seed = entity_seed(p.seed, key) if p.per_entity_seed else p.seed
        return HalfSpaceTrees(n_trees=p.n_trees, height=p.height, window_size=p.window_size, seed=seed)

    def _set_limits(self, entity: _Entity, limits: Sequence[tuple[float, float]]) -> None:
        entity.limits = [(low, high) for low, high in limits]
        entity.low = [low for low, _ in limits]
        entity.width = [high - low for low, high in limits]

    def _build(self, entity: _Entity) -> None:
        """Fix the entity's limits, create its river model and let it learn the buffered events in order."""
        pending = entity.pending
        limits = []
        for col in range(len(self.fields)):
            fixed = self.fixed.get(col)
            if fixed is None:
                fixed = learned_limits([row[col] for row in pending], self.params.limits_margin)
            limits.append(fixed)
        self._set_limits(entity, limits)
        entity.model = self._new_model(entity.key)
        entity.pending = []
        for raw in pending:
            self._learn(entity, raw)

    # ---- explanation ----

    def _freeze_explanations(self, entity: _Entity) -> None:
        """Record the isolating splits of the entity's rows scored so far in this batch, before the reference
        window they were scored against is replaced, so an explanation never depends on batch boundaries."""
        for row in self._unexplained.pop(id(entity), ()):
            self._rows[row][2] = self._isolating_splits(entity.model, self._rows[row][1])

    def _isolating_splits(self, model: HalfSpaceTrees, x: dict[str, float]) -> dict[str, int]:
        """Per field, the trees in which the field's split leads x into the first node with reference mass below
        river's size limit (where river's scoring stops)."""
        counts = dict.fromkeys(self.fields, 0)
        size_limit, height = 0.1 * model.window_size, model.height
        for node in model.trees:
            split = None
            for _ in range(height):
                if node.r_mass < size_limit:
                    break
                split = node.feature
                node = node.children[0] if x[split] < node.threshold else node.children[1]
            else:
                if node.r_mass >= size_limit:
                    split = None
            if split is not None:
                counts[split] += 1
        return counts

    def explain(self, batch: Batch, row: int) -> tuple[str, list[str]]:
        """The fields whose splits isolate the event in the reference window it was scored against."""
        score = float(batch.scores[self.name][row])
        recorded = self._rows[row] if row < len(self._rows) else None
        if recorded is None:
            return f"the event was not scored (score {score:.3g})", list(self.fields)
        entity, x, counts = recorded
        if counts is None:  # the entity's reference window has not changed since the row was scored
            counts = self._isolating_splits(entity.model, x)
        shown = ", ".join(f"{name}={batch.column(name)[row]:g}" for name in self.fields)
        ranked = sorted((name for name in self.fields if counts[name]), key=lambda name: -counts[name])
        if not ranked:
            return (f"{shown} has low reference mass along its paths, though no tree isolates it "
                    f"(score {score:.3f})", list(self.fields))
        top = counts[ranked[0]]
        chosen = [name for name in ranked if 2 * counts[name] >= top]
        by = ", ".join(f"{name} in {counts[name]}" for name in ranked)
        return (f"{shown} lies where the reference window is sparse: isolated by {by} of {self.params.n_trees} trees "
                f"(score {score:.3f})", chosen)

    # ---- state ----

    def evict(self, slots: np.ndarray) -> None:
        super().evict(slots)
        for slot in slots.tolist():
            self.entities.pop(slot, None)

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), "trees": self._trees_snapshot()}

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        self._trees_restore(state["trees"])

    def state_bytes(self) -> int:
        return super().state_bytes() + self.trees_bytes()

    def _trees_snapshot(self) -> dict[str, Any]:
        # A model is created by _build, which lets it learn at once, so every model has its trees.
        built = [(slot, e) for slot, e in self.entities.items() if e.model is not None]
        waiting = [(slot, e) for slot, e in self.entities.items() if e.model is None]
        n_trees, height = self.params.n_trees, self.params.height
        n_nodes, n_branches = 2 ** (height + 1) - 1, 2**height - 1
        column = {name: col for col, name in enumerate(self.fields)}
        mass_type = np.min_scalar_type(self.params.window_size)
        feature = np.empty((len(built), n_trees, n_branches), dtype=np.min_scalar_type(len(self.fields)))
        threshold = np.empty((len(built), n_trees, n_branches), dtype=np.float64)
        l_mass = np.empty((len(built), n_trees, n_nodes), dtype=mass_type)
        r_mass = np.empty((len(built), n_trees, n_nodes), dtype=mass_type)
        limits = np.empty((len(built), len(self.fields), 2), dtype=np.float64)
        for i, (_, entity) in enumerate(built):
            model = entity.model
            for t, nodes in enumerate(model._tree_nodes):
                l_mass[i, t] = [node.l_mass for node in nodes]
                r_mass[i, t] = [node.r_mass for node in nodes]
                branches = [node for node in nodes if isinstance(node, PaddedBranch)]
                feature[i, t] = [column[node.feature] for node in branches]
                threshold[i, t] = [node.threshold for node in branches]
            limits[i] = entity.limits
        return {
            "fields": list(self.fields),
            "slots": np.array([slot for slot, _ in built], dtype=np.int64),
            "keys": [e.key for _, e in built],
            "limits": limits,
            "counter": np.array([e.model.counter for _, e in built], dtype=np.int64),
            "first_window": np.array([e.model._first_window for _, e in built], dtype=bool),
            "feature": feature,
            "threshold": threshold,
            "l_mass": l_mass,
            "r_mass": r_mass,
            "pending_slots": np.array([slot for slot, _ in waiting], dtype=np.int64),
            "pending_keys": [e.key for _, e in waiting],
            "pending": [np.array(e.pending, dtype=np.float64).reshape(-1, len(self.fields)) for _, e in waiting],
        }

    def _trees_restore(self, state: dict[str, Any]) -> None:
        if list(state["fields"]) != list(self.fields):
            raise ValueError(f"snapshot is for fields {list(state['fields'])}, the operator reads {list(self.fields)}")
        n_trees, height = self.params.n_trees, self.params.height
        n_nodes, n_branches = 2 ** (height + 1) - 1, 2**height - 1
        keys = list(state["keys"])
        feature = np.asarray(state["feature"])
        if feature.size != len(keys) * n_trees * n_branches or np.asarray(state["l_mass"]).size != len(keys) * n_trees * n_nodes:
            raise ValueError("snapshot trees do not match n_trees and height")
        threshold = np.asarray(state["threshold"], dtype=np.float64).reshape(len(keys), n_trees, n_branches)
        feature = feature.reshape(len(keys), n_trees, n_branches)
        l_mass = np.asarray(state["l_mass"]).reshape(len(keys), n_trees, n_nodes)
        r_mass = np.asarray(state["r_mass"]).reshape(len(keys), n_trees, n_nodes)
        limits = np.asarray(state["limits"], dtype=np.float64).reshape(len(keys), len(self.fields), 2)
        counter = np.asarray(state["counter"]).tolist()
        first_window = np.asarray(state["first_window"]).tolist()
        self.entities = {}
        collecting = gc.isenabled()
        gc.disable()  # rebuilding creates thousands of acyclic nodes per entity; cyclic collections only slow it (3-4x)
        try:
            self._load_models(np.asarray(state["slots"]).tolist(), keys, limits, feature, threshold, l_mass, r_mass,
                              counter, first_window)
        finally:
            if collecting:
                gc.enable()
        for slot, key, rows in zip(np.asarray(state["pending_slots"]).tolist(), state["pending_keys"], state["pending"]):
            entity = self.entities[slot] = _Entity(key)
            entity.pending = np.asarray(rows, dtype=np.float64).reshape(-1, len(self.fields)).tolist()
        self._rows, self._unexplained = [], {}

    def _load_models(self, slots, keys, limits, feature, threshold, l_mass, r_mass, counter, first_window) -> None:
        n_trees, height = self.params.n_trees, self.params.height
        for i, (slot, key) in enumerate(zip(slots, keys)):
            entity = self.entities[slot] = _Entity(key)
            self._set_limits(entity, [tuple(bounds) for bounds in limits[i].tolist()])
            model = entity.model = self._new_model(key)
            model.trees = [
                _rebuild_tree(height, self.fields, feature[i, t].tolist(), threshold[i, t].tolist(),
                              l_mass[i, t].tolist(), r_mass[i, t].tolist())
                for t in range(n_trees)
            ]
            model._tree_nodes = [list(tree.iter_dfs()) for tree in model.trees]
            model.counter = int(counter[i])
            model._first_window = bool(first_window[i])

    def trees_bytes(self) -> int:
        """Bytes of the Python objects the trees hold, by ``sys.getsizeof`` over the real objects.

        One built model is walked object by object (nodes, children, thresholds, masses above the cached
        small ints, its lists, limits and random generator) and every built model counts that much: their
        structure is identical. On CPython 3.11 this leaves out the inline attribute arrays of the tree
        branches, which ``sys.getsizeof`` does not report (about 12% of a model, measured with tracemalloc).
        """
        total = sys.getsizeof(self.entities)
        shared = {id(name) for name in self.fields}
        float_size = sys.getsizeof(0.0)
        for entity in self.entities.values():
            total += sys.getsizeof(entity.key) + sys.getsizeof(entity) + sys.getsizeof(entity.pending)
            total += sum(map(sys.getsizeof, (entity.limits, entity.low, entity.width)))
            total += len(entity.limits) * (sys.getsizeof((0.0, 0.0)) + 3 * float_size)
            if entity.pending:
                total += len(entity.pending) * (sys.getsizeof(entity.pending[0]) + len(self.fields) * float_size)
            if entity.model is not None:
                if self._model_bytes is None:
                    self._model_bytes = object_bytes(entity.model, shared)
                total += self._model_bytes
        return total


def _rebuild_tree(height: int, names: Sequence[str], feature: list[int], threshold: list[float],
                  l_mass: list[int], r_mass: list[int]) -> PaddedBranch:
    """river's node objects from depth-first arrays (masses for every node, splits for branches only)."""
    masses = iter(zip(l_mass, r_mass))
    splits = iter(zip(feature, threshold))

    def node(depth: int):
        left_mass, right_mass = next(masses)
        if depth == height:
            return PaddedLeaf(r_mass=right_mass, l_mass=left_mass)  # the keyword order river's make_padded_tree uses
        col, at = next(splits)
        left = node(depth + 1)
        right = node(depth + 1)
        return PaddedBranch(left=left, right=right, feature=names[col], threshold=at, l_mass=left_mass, r_mass=right_mass)

    return node(0)
