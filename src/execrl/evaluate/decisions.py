"""Decision logs: one row per (order, decision step) of a backtest, for audit and offline RL.

``run_policy(..., recorder=DecisionRecorder())`` records, while the policy runs, one row for
every environment that is still active at a decision step (never a Python loop over the
environments: each step appends a few arrays). ``execrl evaluate --log-decisions`` writes the
rows of every policy to ``decisions.parquet`` beside ``episodes.parquet``; ``execrl train
--algo bc|cql --data decisions.parquet`` learns from them (``execrl.agents.offline``).

The features are those of a LOG observation set, independent of the policy's own: by default
every feature the market provides plus ``remaining_ratio`` and ``elapsed_ratio`` (the
Almgren–Chriss market: ``remaining_ratio, elapsed_ratio, price_drift, volatility, spread,
last_volume_ratio, expected_volume_ratio`` and, with a signal, ``signal``; order as in
``execrl.env.spaces.FEATURES``). They are computed by a second, never-stepped
``BatchedExecution`` over the same market that reads the running one's order state, so each
value is bit-for-bit what a policy observing that feature would be shown (float32).

Columns, in this order:

    policy              str      the policy's name
    order_idx           int64    the order (environment) index 0 … K−1; its market path is
                                 (seed, order_idx), the same for every policy
    step                int64    the decision step k = 0 … N−1 (decisions already taken)
    <feature> …         float32  the LOG features the decision was taken on
    remaining_before    int64    shares still to trade before the decision (> 0)
    action              int64    the discrete action index the policy chose; −1 when its
                                 action set is continuous
    requested_fraction  float64  the fraction of the remaining quantity the policy asked for
                                 (the action set's fraction; continuous: clipped to [0, 1])
    shares              int64    shares traded in the step: the child order after the hard
                                 limits (at the horizon: what is left, within the limits)
    fraction            float64  the executed fraction, shares / remaining_before
    cut                 bool     the policy asked for more than the hard limits allow (a masked
                                 discrete action, or a continuous request above the cap) and
                                 the child was cut down to them
    breach              bool     the child order went beyond a hard limit (sent or filled
                                 above it; never for the execution core's own orders)
    reward              float64  the step's reward under the run's reward (``EnvConfig.reward``),
                                 as credited to the episode's return (the env hands the policy
                                 the same value rounded to float32); per order, the rewards sum
                                 to ``episodes.parquet``'s ``return``; the last step's carries
                                 the charge of shares left unfilled (``residual_is_bps``)
    reward_name         str      which reward ``reward`` is
    reward_<name> …     float64  the step's reward under each reward of
                                 ``execrl.env.rewards.LOGGED_REWARDS`` (``is_bps``,
                                 ``arrival_vwap``, ``risk_adjusted``): ``reward_<reward_name>``
                                 is ``reward`` itself; the others are recomputed from the
                                 step's outcome with
                                 the fill price recovered from the step's IS (agreeing with a
                                 run under that reward to ~1e-9 bps), so that one log trains
                                 offline agents under any reward
    done                bool     the episode ended with this step
    next_<feature> …    float32  the LOG features after the step (of the final state when
                                 ``done``); for a step that is not the last, equal to the next
                                 row's ``<feature>``

Rows are sorted by (policy run, order_idx, step).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from execrl.domain import ConfigError
from execrl.env.core import BatchedExecution
from execrl.env.factory import reward_for_market, risk_var_per_share2
from execrl.env.rewards import LOGGED_REWARDS, RewardContext, StepOutcome
from execrl.env.spaces import FEATURES, resolve_observation_set
from execrl.market.observations import OBSERVATION_FEATURES
from execrl.sim.spec import MarketSpec

if TYPE_CHECKING:
    import pandas as pd

    from execrl.evaluate.backtest import PolicyRun

DECISIONS_FILE = "decisions.parquet"
NEXT_PREFIX = "next_"
#: The columns around the features, in file order (``<feature>`` columns come after ``step``,
#: ``reward_<name>`` after ``reward_name``, ``next_<feature>`` last).
KEY_COLUMNS = ("policy", "order_idx", "step")
STEP_COLUMNS = (
    "remaining_before",
    "action",
    "requested_fraction",
    "shares",
    "fraction",
    "cut",
    "breach",
    "reward",
    "reward_name",
)


def log_features(market_features: Sequence[str]) -> tuple[str, ...]:
    """The default LOG observation set of a market that provides ``market_features``: the
    order's features and every observation feature the market can feed, in ``FEATURES``
    order."""
    available = set(market_features)
    return tuple(
        name
        for name in FEATURES
        if OBSERVATION_FEATURES[name].source in (None, *available)
    )


def decision_columns(
    features: Sequence[str], rewards: Sequence[str] = LOGGED_REWARDS
) -> list[str]:
    """The columns of a decision log with these LOG features, in file order."""
    return [
        *KEY_COLUMNS,
        *features,
        *STEP_COLUMNS,
        *(f"reward_{name}" for name in rewards),
        "done",
        *(NEXT_PREFIX + name for name in features),
    ]


class DecisionRecorder:
    """Records decision logs of the runs it is handed to (``run_policy(..., recorder=…)``).

    ``features``: the LOG observation set (a set name, a tuple of feature names, or ``None``
    for everything the market provides); ``rewards``: the rewards logged as ``reward_<name>``.
    """

    def __init__(
        self,
        features: str | Sequence[str] | None = None,
        rewards: Sequence[str] = LOGGED_REWARDS,
    ):
        self.features = None if features is None else resolve_observation_set(
            features if isinstance(features, str) else tuple(features)
        )
        for name in rewards:
            if name not in LOGGED_REWARDS:
                raise ConfigError(
                    f"reward {name!r} cannot be logged; choose from {', '.join(LOGGED_REWARDS)}"
                )
        self.rewards = tuple(rewards)

    def start(
        self, policy: str, core: BatchedExecution, market: MarketSpec
    ) -> DecisionLog:
        """Begin the log of one run on ``core`` (already reset); ``market`` is the market
        configuration the run's environment was made from (with the order's horizon)."""
        return DecisionLog(policy, core, market, self.features, self.rewards)


class DecisionLog:
    """The rows of one run, collected step by step: ``before(actions)`` right before
    ``core.step(actions)``, ``after()`` right after it, ``frame()`` at the end."""

    def __init__(
        self,
        policy: str,
        core: BatchedExecution,
        market: MarketSpec,
        features: tuple[str, ...] | None,
        rewards: tuple[str, ...],
    ):
        self.policy = policy
        self.core = core
        self.features = (
            log_features(core.market.available_features) if features is None else features
        )
        # A second execution over the same market, never stepped: only its observation plan
        # is used, on the running one's order state (``_observe``).
        self._shadow = BatchedExecution(
            core.market,
            qty=core.qty,
            side=core.side,
            observations=self.features,
            action_set=core.action_set,
            reward=core.reward,
            autoreset=False,
        )
        env_reward = getattr(core.reward, "name", "")
        self.reward_name = env_reward
        # The other rewards, made as the environment factory makes them.
        self._rewards = {
            name: reward_for_market(name, market)
            for name in rewards
            if name != env_reward
        }
        self._reward_names = rewards
        self._risk_var = risk_var_per_share2(market)
        self._obs = self._observe()
        self._pending: dict[str, NDArray] | None = None
        self._chunks: list[dict[str, NDArray]] = []

    def _observe(self) -> NDArray[np.float32]:
        shadow = self._shadow
        shadow.remaining = self.core.remaining
        shadow.k = self.core.k
        return shadow.observe()

    def before(self, actions: NDArray, obs: NDArray | None = None) -> None:
        core = self.core
        ids = np.flatnonzero(~core.done)
        fraction = core.action_set.to_fraction(actions)  # refuses a bad action, as step would
        if fraction.shape[0] != core.n_envs:
            fraction = np.broadcast_to(fraction, (core.n_envs,))
        if core.action_set.is_discrete:
            action = np.broadcast_to(np.asarray(actions).reshape(-1), (core.n_envs,))[ids]
            action = action.astype(np.int64)
        else:
            action = np.full(ids.size, -1, dtype=np.int64)
        s = core.stats
        self._pending = {
            "ids": ids,
            "step": core.k[ids].copy(),
            "obs": self._obs[ids],
            "remaining_before": core.remaining[ids].copy(),
            "action": action,
            "requested_fraction": np.asarray(fraction, dtype=np.float64)[ids],
            "mid_before": core.market.mid[ids].copy(),
            "is_before": s.is_bps[ids].copy(),
            "return_before": s.episode_return[ids].copy(),
            "cuts_before": s.cuts[ids].copy(),
            "breaches_before": s.breaches[ids].copy(),
        }

    def after(self) -> None:
        if self._pending is None:
            raise RuntimeError("DecisionLog.after() without before()")
        p, self._pending = self._pending, None
        core = self.core
        s = core.stats
        ids = p["ids"]
        self._obs = self._observe()
        remaining_after = core.remaining[ids].copy()
        shares = p["remaining_before"] - remaining_after
        cut = s.cuts[ids] > p["cuts_before"]
        breach = s.breaches[ids] > p["breaches_before"]
        done = core.done[ids].copy()
        reward = s.episode_return[ids] - p["return_before"]
        rewards = {f"reward_{self.reward_name}": reward}
        if self._rewards:
            step_is = s.is_bps[ids] - p["is_before"]
            # the trade's part: the last step's IS also holds the residual's charge
            trade_is = step_is - np.where(done, s.residual_is_bps[ids], 0.0)
            arrival = core.market.arrival_mid[ids]
            traded = shares > 0
            with np.errstate(invalid="ignore", divide="ignore"):
                # step IS = side·q·(px − arrival)/arrival · 1e4/qty, solved for px
                exec_px = np.where(
                    traded,
                    arrival + trade_is * core.qty * arrival / (1e4 * core.side * shares),
                    np.nan,
                )
            outcome = StepOutcome(
                shares=shares,
                exec_px=exec_px,
                mid_before=p["mid_before"],
                mid_after=core.market.mid[ids].copy(),
                remaining_after=remaining_after,
                is_bps=step_is,
                cut=cut,
                done=done,
                episode_is_bps=s.is_bps[ids].copy(),
                episode_is_vs_arrival_vwap_bps=s.is_vs_arrival_vwap_bps[ids].copy(),
            )
            ctx = RewardContext(core.qty, core.side, arrival, self._risk_var)
            for name, fn in self._rewards.items():
                rewards[f"reward_{name}"] = np.asarray(fn(ctx, outcome), dtype=np.float64)
        self._chunks.append(
            {
                "order_idx": ids.astype(np.int64),
                "step": p["step"],
                "obs": p["obs"],
                "remaining_before": p["remaining_before"],
                "action": p["action"],
                "requested_fraction": p["requested_fraction"],
                "shares": shares,
                "fraction": shares / p["remaining_before"],
                "cut": cut,
                "breach": breach,
                "reward": reward,
                **{f"reward_{n}": rewards[f"reward_{n}"] for n in self._reward_names},
                "done": done,
                "next_obs": self._obs[ids],
            }
        )

    def frame(self) -> pd.DataFrame:
        """The run's rows, sorted by (order_idx, step), with the documented columns."""
        names = ["order_idx", "step", "obs", *STEP_COLUMNS[:-1], "done", "next_obs"]
        names += [f"reward_{n}" for n in self._reward_names]
        cols: dict[str, NDArray] = {}
        for name in names:
            if name == "reward_name":
                continue
            parts = [c[name] for c in self._chunks]
            if parts:
                cols[name] = np.concatenate(parts)
            else:
                width = (len(self.features),) if name in ("obs", "next_obs") else ()
                cols[name] = np.zeros((0, *width))
        order = np.lexsort((cols["step"], cols["order_idx"]))
        n = order.size
        obs = cols["obs"][order].astype(np.float32)
        next_obs = cols["next_obs"][order].astype(np.float32)
        data: dict[str, object] = {
            "policy": np.full(n, self.policy, dtype=object),
            "order_idx": cols["order_idx"][order].astype(np.int64),
            "step": cols["step"][order].astype(np.int64),
        }
        for j, name in enumerate(self.features):
            data[name] = obs[:, j]
        data.update(
            {
                "remaining_before": cols["remaining_before"][order].astype(np.int64),
                "action": cols["action"][order].astype(np.int64),
                "requested_fraction": cols["requested_fraction"][order].astype(np.float64),
                "shares": cols["shares"][order].astype(np.int64),
                "fraction": cols["fraction"][order].astype(np.float64),
                "cut": cols["cut"][order].astype(bool),
                "breach": cols["breach"][order].astype(bool),
                "reward": cols["reward"][order].astype(np.float64),
                "reward_name": np.full(n, self.reward_name, dtype=object),
            }
        )
        for name in self._reward_names:
            data[f"reward_{name}"] = cols[f"reward_{name}"][order].astype(np.float64)
        data["done"] = cols["done"][order].astype(bool)
        for j, name in enumerate(self.features):
            data[NEXT_PREFIX + name] = next_obs[:, j]
        import pandas as pd  # here: `execrl evaluate` without a decision log never imports it

        return pd.DataFrame(data)


def decisions_frame(runs: Sequence[PolicyRun]) -> pd.DataFrame:
    """Every run's decision rows, one frame (runs without a log are refused by name)."""
    import pandas as pd

    frames = []
    for run in runs:
        if run.decisions is None:
            raise ConfigError(f"policy {run.policy!r} ran without a decision recorder")
        frames.append(run.decisions)
    return pd.concat(frames, ignore_index=True)


def write_decisions(out_dir: Path, runs: Sequence[PolicyRun]) -> Path:
    """``out_dir/decisions.parquet``; ``out_dir`` is the staging folder of an evaluation's
    output (``execrl.domain.outputs.staged_folder``), swapped in whole at the end."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / DECISIONS_FILE
    decisions_frame(runs).to_parquet(path, index=False)
    return path
