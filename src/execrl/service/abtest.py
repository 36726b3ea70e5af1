"""Shadow A/B: a candidate policy runs in shadow beside the live policy on the same orders and
the same market data, and the paired statistics of its counterfactual IS against the live
IS accumulate over the orders seen so far (seed 001 §6, seed 002 §5).

Same market data: on the service's paper venue an order's market path is its seed
(``serve.order_seed(order_id)``), so the candidate runs the order through the one
``Executor`` on that seed, through the ``ShadowVenue`` (``executor.venues``: nothing is
sent; the fills are the market's counterfactual ones), with the live run's risk limits and
watchdog; on the stream venue it runs on a paper market fed the entries the live order's
batch met (``serve.Member.counterfactual_venue``), read on from the stream if it runs
longer. Its IS is therefore exactly what an offline ``Executor.run`` of the candidate on
that seed gives (a test checks it).

The statistics are ``evaluate.stats.paired_comparison`` (the function ``execrl evaluate``
reports with: mean paired difference, its bootstrap 95 % interval, paired t-test and
Wilcoxon p-values), of candidate minus live (negative: the candidate is cheaper). The pairs
are rows of the summary database (``service.summary``), one per (candidate, order), read
back in order-id order, so the statistics after a restart are those before it, to the bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from execrl.domain import ParentOrder
from execrl.evaluate.stats import PairedComparison, paired_comparison
from execrl.service.summary import SummaryDB, iso


def shadow_run(executor_config: Any, market: Any, order: ParentOrder, seed: int,
               venue: Any = "shadow") -> Any:
    """``order`` through the executor in shadow on market path ``seed``: the
    ``ExecutionRun`` of one order (its ``episodes`` row has the counterfactual IS).
    ``venue``: a venue factory instead (the service's stream venue: a
    ``service.paper.StreamFeed`` replaying the entries the live order met)."""
    from execrl.executor_cli import build_executor

    executor = build_executor(executor_config, market, order, mode="shadow")
    return executor.run(order, 1, seed, venue=venue)


def counterfactual_is(executor_config: Any, market: Any, order: ParentOrder, seed: int,
                      venue: Any = "shadow") -> float:
    """The IS (bps) ``executor_config``'s policy would have had on ``order``."""
    run = shadow_run(executor_config, market, order, seed, venue)
    return float(run.episodes["is_bps"].iloc[0])


class ShadowAB:
    """The pairs of every shadow candidate in ``db`` and their statistics."""

    def __init__(self, db: SummaryDB, n_boot: int = 10_000, seed: int = 0):
        self.db = db
        self.n_boot = n_boot
        self.seed = seed

    def record(self, order_id: str, candidate: str, candidate_hash: str,
               candidate_is_bps: float, live: str, live_hash: str, live_is_bps: float,
               ts_ns: int) -> bool:
        """One pair (once per candidate and order: a re-run after a restart writes nothing)."""
        return self.db.write_pair({
            "candidate_hash": candidate_hash, "order_id": order_id, "candidate": candidate,
            "live": live, "live_hash": live_hash, "live_is_bps": live_is_bps,
            "candidate_is_bps": candidate_is_bps, "recorded_at": iso(ts_ns)})

    def comparison(self, candidate_hash: str, live_hash: str | None = None
                   ) -> PairedComparison | None:
        """Candidate minus live over the pairs so far (None below the two pairs a paired test
        needs). Pairs whose IS is not finite (an order that never filled) are left out."""
        rows = self.db.pairs(candidate_hash, live_hash)
        a = rows["candidate_is_bps"].to_numpy()
        b = rows["live_is_bps"].to_numpy()
        keep = np.isfinite(a) & np.isfinite(b)
        if keep.sum() < 2:
            return None
        candidate = str(rows["candidate"].iloc[0])
        live = str(rows["live"].iloc[0]) if live_hash is not None or \
            rows["live"].nunique() == 1 else "live"
        return paired_comparison(candidate, a[keep], live, b[keep], n_boot=self.n_boot,
                                 seed=self.seed)


__all__ = ["ShadowAB", "counterfactual_is", "shadow_run"]
