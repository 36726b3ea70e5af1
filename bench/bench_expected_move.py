"""The order book's ``expected_cost`` reward against ``risk_adjusted``: two fixed schedules
(TWAP; 30 % of what remains each step) on the same orders of the calm book, per-episode
returns under both rewards. Prints JSON: each return's mean and std, and the mean of the
paired difference (expected_cost − risk_adjusted) with its standard error — the bias the
estimated expected move leaves (``execrl.sim.lob_move``); it differs between the schedules,
which is why ``expected_cost`` is not the book's default reward.

    PYTHONPATH=src nice -n 10 python bench/bench_expected_move.py
"""

from __future__ import annotations

import json

import numpy as np

from execrl.env.factory import EnvConfig, make_execution
from execrl.presets import preset_market


def main(n_orders: int = 512, seed: int = 5) -> None:
    market = preset_market("lob")
    order = market.default_order()
    out: dict = {}
    for name, fraction in (("twap", None), ("front_30pct", 0.3)):
        returns = {}
        for reward in ("risk_adjusted", "expected_cost"):
            core = make_execution(EnvConfig(market=market, actions="continuous", reward=reward),
                                  order, n_envs=n_orders, autoreset=False)
            core.reset(seed=seed)
            while not core.done.all():
                left = np.maximum(core.n_steps - core.k, 1)
                f = 1.0 / left if fraction is None else np.full(core.n_envs, fraction)
                core.step(f.reshape(-1, 1))
            returns[reward] = core.stats.episode_return.copy()
        d = returns["expected_cost"] - returns["risk_adjusted"]
        out[name] = {k: {"mean": float(v.mean()), "std": float(v.std())}
                     for k, v in returns.items()}
        out[name]["diff_mean"] = float(d.mean())
        out[name]["diff_se"] = float(d.std(ddof=1) / np.sqrt(d.size))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
