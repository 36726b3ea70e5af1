"""What a policy did, beside what it cost: seed 000 §5's correlation report and the action
histogram.

Seed 000 expects a buyer to cross the spread more often under selling pressure (tick flow
< 0: sellers are hitting the bid, liquidity is coming to it) and to hold or post passively
under buying pressure; a seller mirrored. Each decision of an order still running is tallied
by the sign of the 10-second tick flow seen at the decision, relative to the order's side
(``opposite``: the other side is trading, ``same``: the order's own side is, ``none``: no
net flow), and by the child order it sent (none, passive, aggressive:
``BatchedExecution.last_order_kinds``). The difference of the aggressive shares between the
two flow buckets comes with a 95 % interval from a bootstrap over orders (decisions of one
order are not independent), so the seed's expectation is checked, not eyeballed.

For a trained policy whose checkpoint records its training domain (``features.json``), the
share of decisions taken on an observation outside that domain is counted too (seed 004 §6:
a policy is not to be trusted far from where it learned).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from execrl.env.core import BatchedExecution
from execrl.market.features import FeatureSchema

FLOW_BUCKETS = ("opposite", "none", "same")
ORDER_KINDS = ("hold", "passive", "aggressive")
_BOOTSTRAP = 2000


class BehaviourTally:
    """Per order, decisions by (flow bucket, kind of child order); per action, how often it
    was chosen (discrete action sets)."""

    def __init__(self, core: BatchedExecution, schema: FeatureSchema | None = None):
        self.core = core
        self.schema = schema
        self.out_of_domain = 0
        self.has_flow = "tick_flow_10s" in core.market.available_features
        self.counts = np.zeros((core.n_envs, len(FLOW_BUCKETS), len(ORDER_KINDS)), np.int64)
        n_actions = core.action_set.n_actions
        self.actions = np.zeros(n_actions, dtype=np.int64)
        self._bucket: NDArray[np.intp] | None = None
        self._active: NDArray[np.bool_] | None = None

    def before(self, actions: NDArray, obs: NDArray | None = None) -> None:
        core = self.core
        self._active = ~core.done
        if self.schema is not None and obs is not None:
            outside = self.schema.out_of_domain(obs[self._active]).any(axis=1)
            self.out_of_domain += int(outside.sum())
        if self.has_flow:
            flow = np.nan_to_num(core.market.feature("tick_flow_10s")) * core.side
            self._bucket = np.where(flow < 0, 0, np.where(flow > 0, 2, 1)).astype(np.intp)
        else:
            self._bucket = np.ones(core.n_envs, dtype=np.intp)
        if self.actions.size:
            idx = core.action_set.flat_actions(actions)
            if idx.shape[0] == core.n_envs:
                self.actions += np.bincount(idx[self._active], minlength=self.actions.size)

    def after(self) -> None:
        assert self._bucket is not None and self._active is not None
        kinds = self.core.last_order_kinds().astype(np.intp)
        rows = np.flatnonzero(self._active)
        np.add.at(self.counts, (rows, self._bucket[rows], kinds[rows]), 1)

    def summary(self, seed: int = 0) -> dict[str, Any]:
        """The ``"behaviour"`` block of a policy in results.json."""
        total = self.counts.sum(axis=0)  # (bucket, kind)
        out: dict[str, Any] = {
            "decisions": int(total.sum()),
            "share_by_kind": _shares(total.sum(axis=0)),
        }
        if self.schema is not None:
            n = out["decisions"]
            out["out_of_training_domain_share"] = self.out_of_domain / n if n else None
        if self.actions.size:
            labels = self.core.action_set.labels or tuple(
                str(a) for a in range(self.actions.size))
            out["action_histogram"] = {
                label: int(c) for label, c in zip(labels, self.actions, strict=True)
            }
        if not self.has_flow:
            return out
        out.update(flow_report(self.counts, seed))
        return out


def flow_report(counts: NDArray[np.int64], seed: int = 0) -> dict[str, Any]:
    """Seed 000 §5 from a tally ``counts[order, flow bucket, kind]`` (``FLOW_BUCKETS`` x
    ``ORDER_KINDS``): the shares of each kind per flow bucket and the aggressive-share
    difference (opposite minus same flow) with its bootstrap interval over orders. The one
    place this is computed: the core's tally and the audit trail's (``evaluate.monitoring``)
    both come here."""
    total = counts.sum(axis=0)
    return {
        "by_tick_flow": {
            bucket: {"decisions": int(total[b].sum()), **_shares(total[b])}
            for b, bucket in enumerate(FLOW_BUCKETS)
        },
        "aggressive_opposite_minus_same": _difference_ci(counts, seed),
    }


def _shares(counts: NDArray[np.int64]) -> dict[str, float | None]:
    n = counts.sum()
    return {kind: (float(counts[j] / n) if n else None) for j, kind in enumerate(ORDER_KINDS)}


def _difference_ci(counts: NDArray[np.int64], seed: int) -> dict[str, Any]:
    """Aggressive share under opposite flow minus under same-side flow, with a 95 % interval
    from a bootstrap over orders; ``expected_sign_holds``: seed 000's expectation (> 0)."""
    agg = counts[:, :, 2]
    dec = counts.sum(axis=2)

    def diff(weights: NDArray) -> NDArray:
        a = weights @ agg  # (B, bucket)
        d = weights @ dec
        with np.errstate(invalid="ignore", divide="ignore"):
            share = a / d
        return share[..., 0] - share[..., 2]

    point = float(diff(np.ones((1, counts.shape[0])))[0])
    if not np.isfinite(point):
        return {"value": None, "ci95": None, "expected_sign_holds": None}
    if agg.sum() in (0, dec.sum()):  # never or always aggressive: the difference is 0 exactly
        return {"value": 0.0, "ci95": [0.0, 0.0], "expected_sign_holds": None}
    rng = np.random.default_rng(seed)
    n = counts.shape[0]
    draws = []
    for start in range(0, _BOOTSTRAP, 250):  # resample weights in blocks (memory)
        m = min(250, _BOOTSTRAP - start)
        w = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(m)])
        draws.append(diff(w.astype(np.float64)))
    boot = np.concatenate(draws)
    boot = boot[np.isfinite(boot)]
    lo, hi = (float(x) for x in np.percentile(boot, [2.5, 97.5]))
    return {
        "value": point,
        "ci95": [lo, hi],
        "expected_sign_holds": bool(lo > 0),
    }
