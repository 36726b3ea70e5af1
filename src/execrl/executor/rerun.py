"""Re-run an order from its audit trail (seed 001 §12, runbook step 4: reproduce with the
simulator): the same market events, the same decisions, the same seeds.

The trail's run record holds what the run was made of (the order, the market, the seed, the
policy with its hash and where it was loaded from, the limits, the watchdog, the mode and the
venue). The whole run is run again, not order i alone: order i's market path (seed, i) does
not depend on the orders beside it, but the watchdog's drift trigger pools the policy's
decisions over every order of the batch. Kills are replayed at the steps the trail recorded
them, and order i's decisions compared with the trail's, column by column.
Decision latency is measured, not decided: it is left out of the comparison, and an order the
latency trigger took from its policy is reproduced only as far as that trigger.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from execrl.domain import ConfigError, ParentOrder
from execrl.executor.audit import AuditTrail, Trail, read_trail
from execrl.executor.loop import Executor, Safety, context_for
from execrl.sim.spec import parse_market

#: the decision columns a re-run must reproduce exactly
COMPARED = ("step", "remaining_before", "working_before", "mid", "action", "acting",
            "child_qty", "child_type", "child_px", "guard_code", "market_reject",
            "filled_qty", "fill_px", "watchdog_state", "trigger")


@dataclass
class Rerun:
    order_id: str
    order_idx: int
    decisions: int
    identical: bool
    first_difference: str | None
    recorded: pd.DataFrame
    replayed: pd.DataFrame


def run_meta(trail: Trail) -> dict[str, Any]:
    runs = trail.runs
    if len(runs) != 1:
        raise ConfigError(f"audit trail holds {len(runs)} runs; a re-run needs exactly one")
    meta = runs["meta"].iloc[0]
    import json

    return json.loads(meta) if isinstance(meta, str) else dict(meta)


def _policy(meta: dict[str, Any], market: Any, order: ParentOrder) -> Any:
    from execrl.agents.export import NumpyPolicy
    from execrl.policies.baselines import make_baseline

    source = meta.get("policy_source") or {}
    path = source.get("path")
    if path:
        policy = NumpyPolicy.load(Path(path), name=meta["policy"], checkpoint=True)
    else:
        policy = make_baseline(meta.get("policy_spec") or meta["policy"],
                               context_for(market, order))
    from execrl.executor.loop import policy_hash

    if policy_hash(policy) != meta["policy_hash"]:
        raise ConfigError(
            f"the policy at {path or meta['policy']!r} has hash {policy_hash(policy)[:12]}…, "
            f"the trail's decisions were made by {str(meta['policy_hash'])[:12]}…: not the same "
            f"policy"
        )
    return policy


def rerun_order(folder: Path, order_id: str, sql_url: str | None = None) -> Rerun:
    """Run ``order_id`` of the trail in ``folder`` again and compare its decisions."""
    from execrl.safety.guard import RiskLimits
    from execrl.safety.watchdog import WatchdogConfig

    trail = read_trail(folder, sql_url)
    meta = run_meta(trail)
    rows = trail.orders[trail.orders["order_id"] == order_id]
    if rows.empty:
        some = ", ".join(trail.orders["order_id"].head(3))
        raise ConfigError(f"order {order_id!r} is not in the trail (it holds {some}, …)")
    idx = int(rows["order_idx"].iloc[0])
    order = ParentOrder.model_validate(meta["order"])
    market = parse_market(meta["market"])
    policy = _policy(meta, market, order)
    safety = Safety(
        limits=None if meta.get("limits") is None else RiskLimits.from_dict(meta["limits"]),
        watchdog=None if meta.get("watchdog") is None
        else WatchdogConfig.from_dict(meta["watchdog"]),
    )
    executor = Executor(policy, market, reward=meta.get("reward", "is_bps"), safety=safety,
                        mode=meta.get("mode", "backtest"))
    kills = trail.incidents[trail.incidents["kind"] == "KILLED"]
    kill_at = {int(r.order_idx): int(r.step) for r in kills.itertuples()}
    step = {"k": 0}

    def replay_kills() -> None:  # after decision k: orders killed at k + 1
        step["k"] += 1
        due = [i for i, s in kill_at.items() if s == step["k"]]
        if due:
            executor.kill_switch.kill_orders(due)

    due0 = [i for i, s in kill_at.items() if s == 0]
    with tempfile.TemporaryDirectory() as tmp:
        audit = AuditTrail(Path(tmp) / "rerun", features=trail.features,
                           labels=trail.manifest.get("labels"))
        executor.audit = audit
        if due0:  # killed before their first decision: the kill file the loop reads first
            from execrl.executor.kill import KillRequest, write_kill_file

            ids = trail.orders.set_index("order_idx")["order_id"]
            write_kill_file(Path(tmp) / "kill", KillRequest(
                orders=frozenset(str(ids[i]) for i in due0)))
            safety.kill_file = str(Path(tmp) / "kill")
        venue = meta.get("venue", "simulated")
        if meta.get("batch"):  # a batch of the desk's orders (``Executor.run_orders``): whole
            executor.run_orders([ParentOrder.model_validate(b["order"]) for b in meta["batch"]],
                                [int(b["seed"]) for b in meta["batch"]], on_step=replay_kills,
                                venue=venue)
        else:
            executor.run(order, int(meta["orders"]), int(meta["seed"]), on_step=replay_kills,
                         venue=venue)
        replayed = read_trail(Path(tmp) / "rerun").decisions
    recorded = trail.decisions[trail.decisions["order_idx"] == idx].reset_index(drop=True)
    replayed = replayed[replayed["order_idx"] == idx].reset_index(drop=True)
    diff = _first_difference(recorded, replayed)
    return Rerun(order_id, idx, len(recorded), diff is None, diff, recorded, replayed)


def _first_difference(a: pd.DataFrame, b: pd.DataFrame) -> str | None:
    if len(a) != len(b):
        return f"{len(a)} decisions recorded, {len(b)} replayed"
    for col in COMPARED:
        if col not in a or col not in b:
            continue
        x, y = a[col].to_numpy(), b[col].to_numpy()
        same = (pd.isna(x) & pd.isna(y)) | (x == y)
        if not np.all(same):
            k = int(np.flatnonzero(~same)[0])
            return f"step {int(a['step'].iloc[k])}: {col} recorded {x[k]!r}, replayed {y[k]!r}"
    return None
