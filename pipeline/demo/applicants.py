"""The demo's decision stream: loan applications to one desk and, hours later, whether each loan was repaid.

Every application is an event of entity ``loans`` with an ``id``, the applicant's group (``a`` or ``b``, the protected
attribute), four numeric fields: ``income`` (thousands, log-normal), ``debt_ratio``, ``years_employed`` and
``credit_lines``, and its ``region`` (a categorical field). Its label (``"1"``: repaid) is an event of the same entity
and id, with no fields, after an exponential delay (mean ``label_delay_hours``); a share ``late_rate`` of labels comes
after ``label_ttl_hours`` (too late to learn from) and a share ``never_rate`` never comes. The disparity is built in
twice, as in credit data: group b's incomes are lower (a historical gap), and its repayment odds are lower at equal
features (the labels themselves carry the bias). A model that predicts repayment as well as it can therefore approves
group a far more often; a fair one trades a little accuracy for closer approval rates. Everything derives from ``seed``.

>>> stream = ApplicantStream(applications=2000, start_ms=0, span_ms=86_400_000, seed=7)
>>> group, label = stream.group, stream.label
>>> float(round(label[group == 0].mean() - label[group == 1].mean(), 2))  # repayment rates of a and b differ
0.16
"""
from __future__ import annotations

import numpy as np

DESK = "loans"
GROUPS = ("a", "b")
FIELDS = ("income", "debt_ratio", "years_employed", "credit_lines")
REGIONS = ("north", "south", "east", "west")  # the applicant's region: a categorical field (the demo's dp_count)
REGION_SHARES = (0.4, 0.3, 0.2, 0.1)
HOUR_MS = 3_600_000


class ApplicantStream:
    def __init__(self, *, applications: int, start_ms: int, span_ms: int, seed: int, label_delay_hours: float = 3.0,
                 label_ttl_hours: float = 12.0, late_rate: float = 0.05, never_rate: float = 0.05) -> None:
        rng = np.random.default_rng([seed, 1])  # its own stream: the service metrics stay as they were
        n = applications
        self.ts_ms = start_ms + np.sort(rng.integers(0, span_ms, n))
        self.group = (rng.random(n) < 0.4).astype(np.int64)  # 40 % of applicants in group b
        b = self.group
        income = np.exp(rng.normal(np.log(48.0) - 0.25 * b, 0.45))
        debt_ratio = np.clip(rng.beta(2.0, 5.0, n) + 0.05 * b, 0.0, 1.0)
        years = rng.gamma(2.0, 3.0, n)
        lines = rng.poisson(4.0, n).astype(np.float64)
        self.features = np.column_stack([income, debt_ratio, years, lines])
        odds = 2.0 * np.log(income / 40.0) - 4.0 * (debt_ratio - 0.3) + 0.08 * (years - 6.0) + 0.05 * (lines - 4.0) \
            + 0.5 - 0.25 * b
        self.label = (rng.random(n) < 1.0 / (1.0 + np.exp(-odds))).astype(np.int64)
        delay = rng.exponential(label_delay_hours * HOUR_MS, n)
        fate = rng.random(n)
        late = fate < late_rate
        delay[late] = label_ttl_hours * HOUR_MS * rng.uniform(1.1, 2.0, late.sum())
        never = (fate >= late_rate) & (fate < late_rate + never_rate)
        self.label_ts_ms = np.where(never, -1, self.ts_ms + delay.astype(np.int64))  # -1: the label never comes
        self.ids = [f"app-{i:06d}" for i in range(n)]
        self.region = rng.choice(len(REGIONS), n, p=REGION_SHARES)  # drawn last: the other draws stay as they were

    def events(self) -> list[tuple[int, dict]]:
        """Decisions and labels as (event time, wire event), in event-time order (a decision before its label)."""
        rounded = np.round(self.features, 3).tolist()
        out = [(int(ts), 0, {"key": DESK, "ts": int(ts), "id": app, "group": GROUPS[g],
                             "fields": {**dict(zip(FIELDS, row)), "region": REGIONS[r]}})
               for ts, app, g, row, r in zip(self.ts_ms.tolist(), self.ids, self.group.tolist(), rounded,
                                             self.region.tolist())]
        out += [(int(ts), 1, {"key": DESK, "ts": int(ts), "id": app, "label": str(label), "fields": {}})
                for ts, app, label in zip(self.label_ts_ms.tolist(), self.ids, self.label.tolist()) if ts >= 0]
        out.sort(key=lambda item: (item[0], item[1]))
        return [(ts, event) for ts, _, event in out]
