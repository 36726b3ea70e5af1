"""The calibrated market configuration: the estimates in the simulator's schema.

``market_config`` turns a ``QueueReactiveFit`` (and optionally a ``HawkesFit``) into the JSON
object ``LOBMarketConfig.from_dict`` accepts (``{"model": "lob", ...}``), validates it there,
and returns the plain dict that ``execrl evaluate --market`` reads back. Fields the data do not
inform (the agent's resilience, fees, the decision interval, the horizon, risk aversion) keep
the schema's defaults and are listed in ``NOT_FROM_DATA``.

With Hawkes market orders the queue-reactive market-order table becomes the *baseline* of the
self-exciting process: a stationary Hawkes process with branching ratio n runs at
baseline / (1 − n), so the table is scaled by (1 − n) and the mean market-order rate stays
the day's. The excitation cap ``max_rate`` is the 99th percentile of the fitted excitation
just after the day's market orders (the simulator thins its candidates at a rate that includes
it, so a higher cap costs speed for bursts that are rare).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from execrl.calibrate.hawkes import HawkesFit
from execrl.calibrate.queue_reactive import QueueReactiveFit, size_distribution
from execrl.domain import DataError

#: Fields of the schema the calibration leaves at their defaults (or sets without the data),
#: and why.
NOT_FROM_DATA: dict[str, str] = {
    "resilience": "set to 0, not from the data (which hold no agent to react to). The book "
                  "still refills after the agent's trades through the estimated flow itself "
                  "(limit orders into empty levels, more orders where queues are short). With "
                  "the default refill (`taken_price`, resilience 0.005) a TWAP buy metaorder "
                  "ends with the mid below the paired book that did not trade: refills go to "
                  "the lowest price the agent took while its deficit lasts, which caps the "
                  "ask near the arrival price (64 paired books, 1 h, 4 % of the day's volume: "
                  "-34 bps; -89 bps with reinit_prob 1). `refill = \"stationary\"` keeps the "
                  "sign (+89 bps, reinit_prob 1) but neither lowers the impact nor makes it "
                  "more concave (exponent 0.93 +- 0.04 over 4 sizes, 0.89 without it): 0 "
                  "leaves the impact curve to the flow's own reaction",
    "taker_fee": "a venue's fee schedule, not in LOBSTER",
    "maker_rebate": "a venue's fee schedule, not in LOBSTER",
    "step_seconds": "the decision interval is the user's choice",
    "horizon_s": "set by the order",
    "warmup_s": "a simulation setting",
    "risk_aversion": "the user's preference",
}

#: Largest excitation cap (events/s) written into a configuration.
MAX_HAWKES_RATE = 1e3


def _table(a: NDArray[np.float64], digits: int = 9) -> list[list[float]]:
    return [[float(round(v, digits)) for v in row] for row in a]


def hawkes_excitation_cap(fit: HawkesFit, times: NDArray[np.float64],
                          sides: NDArray[np.integer], quantile: float = 0.99) -> float:
    """The ``quantile`` of the fitted excitation (own side) just after each market order."""
    t = np.asarray(times, float)
    side = np.where(np.asarray(sides) == 1, 0, 1)
    r = np.zeros(2)
    last = t[0] if t.size else 0.0
    after = np.empty(t.size)
    for i in range(t.size):  # a few thousand orders, once: clarity over speed
        r *= math.exp(-fit.beta * (t[i] - last))
        last = t[i]
        r[side[i]] += 1.0
        s = side[i]
        after[i] = fit.alpha_self * r[s] + fit.alpha_cross * r[1 - s]
    return float(np.quantile(after, quantile)) if t.size else fit.alpha_self


def market_config(
    fit: QueueReactiveFit, s0: float, theta: float, hawkes: HawkesFit | None = None,
    hawkes_cap: float | None = None, exchange_tick: float = 0.01, reinit_prob: float = 0.0,
) -> dict[str, Any]:
    """The ``lob`` market configuration of ``fit`` (module docstring), validated at the day's
    price ``s0``. ``s0`` itself is left out of the file: ``execrl evaluate --market`` takes the
    arrival price from the order (give the order GOOG's ~$570 for GOOG's bps)."""
    from execrl.sim.lob_config import LOBMarketConfig

    market = fit.market_rate
    out: dict[str, Any] = {
        "model": "lob",
        "regime": "calibrated",
        "exchange_tick": float(exchange_tick),
        "ticks_per_level": int(fit.ticks_per_level),
        "n_levels": int(fit.n_levels),
        "aes": int(fit.aes),
        "limit_rate": _table(fit.limit_rate),
        "cancel_rate": _table(fit.cancel_rate),
        "init_queue": [_probs(row) for row in fit.init_queue],
        "limit_size": size_distribution(np.concatenate([fit.limit_sizes, fit.cancel_sizes])),
        "market_size": size_distribution(fit.market_sizes),
        "theta": float(round(theta, 6)),
        "reinit_prob": float(round(reinit_prob, 6)),
        "resilience": 0.0,
        "hawkes": None,
    }
    if hawkes is not None:
        n = hawkes.branching_ratio
        market = market * (1.0 - n)
        cap = min(MAX_HAWKES_RATE, max(hawkes_cap or hawkes.alpha_self, 1e-3))
        out["hawkes"] = {"alpha_self": float(hawkes.alpha_self),
                         "alpha_cross": float(hawkes.alpha_cross), "beta": float(hawkes.beta),
                         "max_rate": float(round(cap, 6)), "agent_excites": True}
    out["market_rate"] = _table(market)
    try:
        LOBMarketConfig.from_dict({**out, "s0": float(s0)}, "calibrated market")
    except Exception as exc:  # a calibration that the simulator refuses is this code's bug
        raise DataError(f"the calibrated configuration is not valid: {exc}") from None
    return out


def _probs(row: NDArray[np.float64]) -> list[float]:
    p = np.round(np.asarray(row, float), 12)
    p[np.argmax(p)] += 1.0 - math.fsum(p.tolist())
    return p.tolist()
