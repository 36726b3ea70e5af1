"""What ``execrl train --algo X`` does when told nothing else, and named configurations.

Each algorithm's defaults (action set, training budget, environments) are the ones measured
to reach the optimum on the default market (``bench/bench_defaults.py``; the figures are in
``bench/README.md``); its hyper-parameters' defaults live with the algorithm (``PPOParams``,
``DQNParams``, ``QRDQNParams``, ``QLearningConfig``), so a partial ``--config`` overrides
only what it names and keeps the rest of the configuration that learns.

The reward defaults to ``expected_cost`` on markets that know their own expected price move
exactly (the Almgren–Chriss market): seed 001's risk-adjusted reward with the unpredictable price
innovation removed, which leaves every policy's expected return, hence the optimum,
unchanged and removes the price risk from the noise of the return. Elsewhere, and for the
offline algorithms (a decision log carries realised rewards only), it is ``risk_adjusted``
itself; the order book estimates its expected move (``execrl.sim.lob_move``), so there
``expected_cost`` is offered, not the default.

Observations are scaled ``fixed`` by default (``default_normalise``), so the Almgren–Chriss
defaults and the figures measured with them are unchanged; on the order book with seed
001's or seed 003's observation set the network algorithms normalise online by default
(seed 001 §5): measured paired against fixed with maskable PPO (bench/bench_normalise.py),
better on seed001 (3 seeds out of 3) and no different on seed003.

Named configurations (``--config NAME``, when no file of that name exists) keep the seeds'
own values at hand: ``seed003`` (tabular Q: seed 003's TOML, ``configs/rl_execution.toml``)
and ``seed001`` (DQN / QR-DQN: seed 001 §5's Dueling-DDQN starting values); ``shaped`` and
``signal`` (tabular Q, DQN, QR-DQN, PPO) add reward shaping by TWAP's cost-to-go for the
Almgren–Chriss markets (``signal``: and 11 signal buckets for tabular Q, a 256 × 256 network,
a linearly falling learning rate and replay ratio 8 for DQN), measured in seed 004's set-up and the
OU-signal market.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from execrl.domain import ConfigError
from execrl.sim.spec import MarketSpec

#: the default training reward, and the one used where a market cannot provide it
DEFAULT_REWARD = "expected_cost"
FALLBACK_REWARD = "risk_adjusted"
#: market models whose batched market implements ``expected_mid_change`` (the
#: ``expected_cost`` reward); a market model that adds it adds its name here
EXPECTED_MOVE_MODELS = frozenset({"almgren_chriss", "lob"})
#: those whose expected move is the exact conditional mean, so that ``expected_cost`` keeps
#: the optimum and is the default reward; the order book's is an estimate
#: (``execrl.sim.lob_move``): there ``expected_cost`` is a choice (``--reward``)
EXACT_MOVE_MODELS = frozenset({"almgren_chriss"})


@dataclass(frozen=True)
class AlgoDefaults:
    """What an algorithm trains with when the command line does not say."""

    actions: str
    steps: int  # environment steps (offline: gradient steps)
    n_envs: int  # environments stepped together (online algorithms)


ALGO_DEFAULTS: dict[str, AlgoDefaults] = {
    "qtable": AlgoDefaults(actions="seed004", steps=2_000_000, n_envs=1024),
    "dqn": AlgoDefaults(actions="seed004", steps=300_000, n_envs=256),
    "qrdqn": AlgoDefaults(actions="seed004", steps=300_000, n_envs=256),
    "ppo": AlgoDefaults(actions="continuous", steps=1_500_000, n_envs=1024),
    "maskable-ppo": AlgoDefaults(actions="seed004", steps=500_000, n_envs=1024),
    "bc": AlgoDefaults(actions="seed004", steps=5_000, n_envs=256),
    "cql": AlgoDefaults(actions="seed004", steps=5_000, n_envs=256),
}


def algo_defaults(algo: str) -> AlgoDefaults:
    if algo not in ALGO_DEFAULTS:
        raise ConfigError(f"--algo {algo!r} is unknown; choose from {', '.join(ALGO_DEFAULTS)}")
    return ALGO_DEFAULTS[algo]


#: algorithms that read the fixed-scaled features only (``--normalise online`` is refused):
#: the tabular agent's state buckets are fixed ranges, the offline ones learn from a log
FIXED_SCALE_ALGOS = ("qtable", "bc", "cql")
#: (market model, observation set) where ``execrl train`` normalises online by default: the
#: order book's seed 001 / seed 003 sets, where it was measured not worse than fixed
#: (bench/bench_normalise.py, bench/README.md)
ONLINE_BY_DEFAULT = frozenset({("lob", "seed001"), ("lob", "seed003")})


def default_normalise(market: MarketSpec, observations: object, algo: str) -> str:
    """``online`` for the order book's seed 001 and seed 003 observation sets (the network
    algorithms), ``fixed`` elsewhere: the Almgren–Chriss defaults and every figure measured
    on them stay as they were (module docstring)."""
    if algo in FIXED_SCALE_ALGOS or not isinstance(observations, str):
        return "fixed"
    return "online" if (market.model, observations) in ONLINE_BY_DEFAULT else "fixed"


def default_reward(market: MarketSpec) -> str:
    """``expected_cost`` where the market knows its expected move exactly, else
    ``risk_adjusted``."""
    return DEFAULT_REWARD if market.model in EXACT_MOVE_MODELS else FALLBACK_REWARD


#: seed 003's ``[rl_execution]`` values (configs/rl_execution.toml)
SEED003_QTABLE: dict[str, Any] = {
    "mode": "training",
    "q_learning": {"alpha": 0.1, "gamma": 0.99, "epsilon": 0.3, "epsilon_min": 0.05,
                   "epsilon_decay": 0.995},
    "state": {"remaining_buckets": 5, "time_buckets": 10, "spread_buckets": 5,
              "imbalance_buckets": 5, "hour_buckets": 6},
    "replay_buffer": {"capacity": 10_000, "batch_size": 32, "update_frequency": 10},
}
#: seed 001 §5's Dueling-DDQN starting values (lr, γ, batch, replay, ε 0.1 → 0.01)
SEED001_DQN: dict[str, Any] = {
    "learning_rate": 2e-4, "gamma": 0.995, "batch_size": 256, "buffer_size": 200_000,
    "exploration_initial_eps": 0.1, "exploration_final_eps": 0.01,
}

#: the defaults plus potential-based shaping by TWAP's cost-to-go (``execrl.agents.shaping``;
#: Almgren–Chriss markets): what reaches the grid optimum in seed 004's set-up and, with 11
#: signal buckets for tabular Q, ≥ 0.8 of the OU-signal optimum's gain (bench/README.md)
SHAPED_QTABLE: dict[str, Any] = {"q_learning": {"shaping": "twap"}}
SIGNAL_QTABLE: dict[str, Any] = {"state": {"imbalance_buckets": 11},
                                 "q_learning": {"shaping": "twap"}}
SHAPED_DQN: dict[str, Any] = {"shaping": "twap"}
#: PPO with the same shaping: 0.96 of the OU-signal optimum's gain at 3M steps (bench/README.md)
SHAPED_PPO: dict[str, Any] = {"shaping": "twap"}
#: DQN in the OU-signal market: shaped, a wider network (256 × 256), the learning rate falling
#: linearly to 0 and twice the default replay ratio (8 gradient samples per transition); shaped
#: alone stopped at 0.76 of the optimum's gain, without the replay ratio at 0.79
#: (bench/README.md)
SIGNAL_DQN: dict[str, Any] = {"shaping": "twap", "net_arch": [256, 256], "lr_schedule": "linear",
                              "replay_ratio": 8.0}

#: algorithm -> configuration name -> hyper-parameters (``--config NAME``)
NAMED_CONFIGS: dict[str, dict[str, dict[str, Any]]] = {
    "qtable": {"seed003": SEED003_QTABLE, "shaped": SHAPED_QTABLE, "signal": SIGNAL_QTABLE},
    "dqn": {"seed001": SEED001_DQN, "shaped": SHAPED_DQN, "signal": SIGNAL_DQN},
    "qrdqn": {"seed001": SEED001_DQN, "shaped": SHAPED_DQN, "signal": SHAPED_DQN},
    "ppo": {"shaped": SHAPED_PPO, "signal": SHAPED_PPO},
}


def named_config(algo: str, value: str | Path) -> dict[str, Any] | None:
    """The named configuration ``value`` for ``algo`` (a copy), or None when ``value`` is not
    a name (a file path). A name another algorithm has is refused by name."""
    name = str(value)
    if Path(name).exists() or any(sep in name for sep in ("/", "\\", ".")):
        return None
    own = NAMED_CONFIGS.get(algo, {})
    if name in own:
        import copy

        return copy.deepcopy(own[name])
    if any(name in configs for configs in NAMED_CONFIGS.values()):
        known = ", ".join(own) or "none"
        raise ConfigError(
            f"--config {name!r} is a named configuration of another algorithm; {algo}'s: {known}"
        )
    return None
