"""The stochastic limit order book's parameters (``LOBMarketConfig``): every table and unit.

The model (``execrl.sim.lob`` has the simulator; /work/notes/lob-schema.md the long form):

Price frame. Prices are on a grid of ``tick_size = exchange_tick × ticks_per_level`` (a
small-tick stock such as GOOG aggregates several exchange ticks into one simulated level).
Each book has a reference price p_ref = (r + ½)·tick on the half-tick grid and ``n_levels``
levels a side around it: bid level j (0-based) at price index r − j, ask level j at r + 1 + j
(Huang, Lehalle & Rosenbaum 2015's Q_{−(j+1)} and Q_{j+1}). A level may be empty, so the spread
is one tick or more. p_ref moves by one tick (the frame shifts, queues keep their prices, the
level entering the window is drawn from ``init_queue``) (a) with probability ``theta`` when a
level-0 queue depletes, toward the depleted side (HLR's model II) and (b) whenever the empty
levels on one side of p_ref outnumber those on the other by two or more (p_ref stays at the mid
when the spread is an odd number of ticks, within half a tick of it otherwise). When an event
empties a side's best queue (a level-0 one, or the first non-empty level deeper in a wide
spread) and p_ref moves because of it (by (a) or (b)), then with probability ``reinit_prob``
every queue of the window is redrawn from ``init_queue`` around the new p_ref (HLR's model
III: after a price change the book's state is drawn afresh from its invariant law; the part of
the price moves the order flow does not explain).

Queue sizes are counted in units of the average event size ``aes`` (shares): a queue of q
shares is in bucket 0 when q = 0 and min(ceil(q / aes), B − 1) otherwise, B = the tables' number
of columns (bucket b ≥ 1 holds (b − 1, b] AES; the last one everything above B − 2 AES).

Other traders' flow (per side, the two sides symmetric): limit orders arrive at level j at rate
``limit_rate[j][b]`` (events/s), b = that level's bucket; cancels at rate
``cancel_rate[j][b]``; market orders hit the side's best non-empty level j at
``market_rate[j][b]`` (b = that level's bucket), plus an optional Hawkes self-exciting part.
Limit and cancel sizes are drawn from ``limit_size``, market orders from ``market_size``
(shares; a cancel takes at most the others' volume at the level, a market order at most the
level's volume). Events happen one by one in continuous time.

The agent's effect on the flow (transient impact): each share it takes aggressively from a
side adds to that side's deficit D (shares). While D > 0, each limit order arriving on that
side is, with probability min(1, ``resilience`` × D / aes), redirected to the best price the
agent took there (or one tick from the opposite best when that is worse: it never crosses),
and reduces D by its size: liquidity comes back where it was taken, at a rate proportional to
what is missing (an exponential propagator), without adding volume to the flow. With
Hawkes market orders and ``agent_excites``, the agent's aggressive shares also excite the
market orders of its side (order-flow imbalance after its trades).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from execrl.domain import ConfigError, ParentOrder, Side
from execrl.sim.spec import MarketKnowledge, SpecModel

if TYPE_CHECKING:
    from execrl.sim.almgren_chriss import ACMarketConfig
    from execrl.sim.lob import LOBEstimate, LOBMarket

Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Rate = Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
#: one row per level, one column per queue-size bucket
Table = Annotated[
    tuple[Annotated[tuple[Rate, ...], Field(strict=False)], ...], Field(min_length=1, strict=False)
]
ProbTable = Annotated[
    tuple[Annotated[tuple[Fraction, ...], Field(strict=False)], ...],
    Field(min_length=1, strict=False),
]

#: Fewest and most levels a side.
MIN_LEVELS, MAX_LEVELS = 10, 64
#: Most queue-size buckets per level.
MAX_BUCKETS = 256
#: Largest total event rate of one book (events/s, thinning bound included): a step of a
#: minute then holds at most a few million events.
MAX_TOTAL_RATE = 1e5
#: Most candidate events one book may simulate over an order (warm-up included).
MAX_EVENTS_PER_ORDER = 1e9
#: Most decision steps over a horizon.
MAX_STEPS = 10_000
_PROB_TOLERANCE = 1e-6


class SizeDistribution(BaseModel):
    """A discrete distribution of order sizes: ``values`` (whole shares, increasing) with
    ``probs`` (summing to 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    values: Annotated[
        tuple[Annotated[int, Field(ge=1, le=10**9)], ...], Field(min_length=1, strict=False)
    ]
    probs: Annotated[tuple[Fraction, ...], Field(min_length=1, strict=False)]

    @model_validator(mode="after")
    def _consistent(self) -> SizeDistribution:
        if len(self.values) != len(self.probs):
            raise ValueError(
                f"values has {len(self.values)} sizes and probs {len(self.probs)}: one each"
            )
        if any(b <= a for a, b in zip(self.values, self.values[1:], strict=False)):
            raise ValueError(f"values = {list(self.values)} must be strictly increasing")
        total = math.fsum(self.probs)
        if abs(total - 1.0) > _PROB_TOLERANCE:
            raise ValueError(f"probs sum to {total!r}, not 1")
        return self

    @property
    def mean(self) -> float:
        return math.fsum(v * p for v, p in zip(self.values, self.probs, strict=True))

    def cdf(self) -> NDArray[np.float64]:
        """Cumulative probabilities, the last one exactly 1 (what the kernels draw from)."""
        c = np.cumsum(np.asarray(self.probs, dtype=np.float64))
        c[-1] = 1.0
        return c


class HawkesConfig(BaseModel):
    """Self-exciting market orders (exponential kernel), per aggressor side.

    Each market order of one side adds ``alpha_self`` (events/s) to that side's excitation and
    ``alpha_cross`` to the other's; excitation decays at rate ``beta`` (1/s) and adds to the
    queue-reactive market-order rate, capped at ``max_rate`` (the simulator's thinning bound).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    alpha_self: NonNegative
    alpha_cross: NonNegative = 0.0
    beta: Annotated[float, Field(gt=0, le=1e4, allow_inf_nan=False)]
    max_rate: Annotated[float, Field(gt=0, le=1e4, allow_inf_nan=False)]
    agent_excites: bool = True
    """The agent's aggressive fills excite its side too: ``alpha_self`` per AES it takes."""

    @model_validator(mode="after")
    def _stationary(self) -> HawkesConfig:
        ratio = (self.alpha_self + self.alpha_cross) / self.beta
        if not ratio < 1.0:
            raise ValueError(
                f"branching ratio (alpha_self + alpha_cross) / beta = {ratio:.3g} must be < 1 "
                "(the flow explodes otherwise)"
            )
        return self


class ShockConfig(BaseModel):
    """A scheduled price move (crash, flash crash): the book is pushed one tick at a time,
    evenly over ``duration`` (a fraction of the horizon from ``start``), by forced sweeps:
    each clears the level-0 queue on the side the price moves through (a trade printed there,
    resting orders filled FIFO), then moves the whole book a tick (the other side's orders
    re-price with it; the agent's order keeps its price). With ``recovery`` the move is walked
    back the same way over that fraction of the horizon, right after."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    move: Annotated[float, Field(ge=-0.5, le=0.5, allow_inf_nan=False)]
    """Size of the move as a fraction of s0 (−0.10: a 10 % fall)."""
    start: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.25
    duration: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.25
    recovery: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _nonzero(self) -> ShockConfig:
        if self.move == 0.0:
            raise ValueError("move = 0 is no shock: leave 'shock' out instead")
        return self


def _default_tables(n_levels: int = 10, n_buckets: int = 11, touch: float = 1.6,
                    behind: float = 0.9, decay: float = 0.8, cancel_per_aes: float = 0.25,
                    market: float = 0.6) -> dict[str, Any]:
    """The calm default: limit rates falling with the distance from p_ref (twice as fast into
    an empty level; level 0 also makes up for the market orders it takes), cancels
    proportional to the queue (each AES cancels at 0.2/s), market orders at 0.6/s on the best
    level; initial queues Poisson around the limit / cancel balance."""
    limit, cancel, market_rate, init = [], [], [], []
    for j in range(n_levels):
        base = touch if j == 0 else behind * decay ** (j - 1)
        limit.append(tuple([2.0 * base] + [base] * (n_buckets - 1)))
        cancel.append(tuple([0.0] + [cancel_per_aes * b for b in range(1, n_buckets)]))
        market_rate.append(tuple([0.0] + [market * 0.7**j] * (n_buckets - 1)))
        mean = max(0.1, base - (market if j == 0 else 0.0)) / cancel_per_aes
        pmf = [math.exp(-mean) * mean**b / math.factorial(b) for b in range(n_buckets)]
        pmf[-1] = max(0.0, 1.0 - math.fsum(pmf[:-1]))
        total = math.fsum(pmf)
        init.append(tuple(p / total for p in pmf))
    return {"limit_rate": tuple(limit), "cancel_rate": tuple(cancel),
            "market_rate": tuple(market_rate), "init_queue": tuple(init)}


_DEFAULTS = _default_tables()


class LOBMarketConfig(SpecModel):
    """Parameters of the stochastic limit order book (module docstring; units per field).

    Each field is validated alone (strictly: no string for a number); the tables together
    (one shape, probabilities summing to one); ``validate_for_order`` checks a market and an
    order together. ``s0`` and ``horizon_s`` are the order's (``for_order``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    model: Literal["lob"] = "lob"
    """The market-specification union's tag (``execrl.sim.spec``)."""
    regime: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")] = (
        "custom")
    """A label for reports and regime buckets (presets: calm, stressed, crash, ...)."""
    s0: Annotated[float, Field(gt=0, le=1e9, allow_inf_nan=False)] = 25.0
    """Arrival price (currency); the book's mid at arrival is within half a tick of it."""
    exchange_tick: Annotated[float, Field(gt=0, le=1e3, allow_inf_nan=False)] = 0.01
    """The venue's tick (currency)."""
    ticks_per_level: Annotated[int, Field(ge=1, le=10_000)] = 1
    """Exchange ticks aggregated into one simulated price level (small-tick stocks)."""
    n_levels: Annotated[int, Field(ge=MIN_LEVELS, le=MAX_LEVELS)] = 10
    """Levels a side in the simulated window (the tables' rows)."""
    aes: Annotated[int, Field(ge=1, le=10**9)] = 100
    """Average event size (shares): the unit of the queue-size buckets."""
    limit_rate: Table = _DEFAULTS["limit_rate"]
    """[level][bucket] limit orders per second arriving at one side's level."""
    cancel_rate: Table = _DEFAULTS["cancel_rate"]
    """[level][bucket] cancels per second at one side's level (bucket 0 must be 0)."""
    market_rate: Table = _DEFAULTS["market_rate"]
    """[level][bucket] market orders per second hitting one side's best level, when that best
    is this level with this bucket (bucket 0 must be 0)."""
    init_queue: ProbTable = _DEFAULTS["init_queue"]
    """[level][bucket] probability that a fresh queue (the initial book, a level entering the
    window) is in this bucket; within a bucket b ≥ 1 its size is uniform on ((b−1)·aes, b·aes]
    shares."""
    limit_size: SizeDistribution = SizeDistribution(values=(50, 100, 200), probs=(0.3, 0.5, 0.2))
    """Shares per limit order and per cancel."""
    market_size: SizeDistribution = SizeDistribution(values=(50, 100, 200), probs=(0.3, 0.5, 0.2))
    """Shares per market order (capped at the best level's volume)."""
    theta: Fraction = 0.5
    """Probability that p_ref moves when a level-0 queue depletes (HLR model II)."""
    reinit_prob: Fraction = 0.0
    """θ_reinit: probability that, once p_ref has moved after a side's best queue emptied
    (module docstring), every queue of the window is redrawn from ``init_queue`` (HLR model
    III; 0: never, model II). The agent's resting order keeps its price and at most the
    redrawn queue stays ahead of it; its deficits (``resilience``) stay."""
    resilience: Annotated[float, Field(ge=0, le=1e3, allow_inf_nan=False)] = 0.005
    """How fast the book gives back what the agent took: a limit order arriving on a side
    with a deficit of D shares is redirected to the agent's price with probability
    min(1, resilience × D / aes) (per AES of deficit), so the deficit decays at a rate
    proportional to itself (an exponential propagator)."""
    refill: Literal["taken_price", "stationary"] = "taken_price"
    """Where ``resilience`` redirects a limit order: ``taken_price``, back at the best price
    the agent took on that side while its deficit lasts (never crossing); ``stationary``, to
    the level of that side (in the frame now) whose shares fall furthest below its mean under
    ``init_queue``: the book's shape comes back, not the old price."""
    hawkes: HawkesConfig | None = None
    shock: ShockConfig | None = None
    conservative_fills: bool = False
    """A resting order fills only when a trade prints strictly through its price (seed 000
    Q2): it never queues, takes no volume from the book, and fills up to the size of each
    such trade at its own price."""
    taker_fee: Annotated[float, Field(ge=0, le=1e3, allow_inf_nan=False)] = 0.0
    """Fee per share the agent pays when it takes liquidity (currency)."""
    maker_rebate: Annotated[float, Field(ge=0, le=1e3, allow_inf_nan=False)] = 0.0
    """Rebate per share the agent earns when its resting order fills (currency)."""
    step_seconds: Annotated[float, Field(ge=1e-3, le=86_400, allow_inf_nan=False)] = 10.0
    """Target decision interval (s): the horizon is split into n_steps = max(1,
    round(horizon_s / step_seconds)) equal steps."""
    horizon_s: Annotated[float, Field(ge=1e-3, le=1e7, allow_inf_nan=False)] = 300.0
    """The order's horizon (s)."""
    warmup_s: Annotated[float, Field(ge=0, le=86_400, allow_inf_nan=False)] = 60.0
    """Seconds of flow simulated before the order arrives (its arrival VWAP, the features'
    windows)."""
    risk_aversion: NonNegative = 1e-6
    """λ of the mean-variance objective E[cost] + λ·Var[cost] (per currency unit)."""
    reference_vol_ticks: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)] | None = (
        None)
    """The ``volatility`` feature divides the realised volatility of the mid (ticks per √s) by
    this; None: by this model's own estimate (1 = its usual level). Regimes use calm's."""

    @model_validator(mode="after")
    def _tables_agree(self) -> LOBMarketConfig:
        K = self.n_levels
        shape = None
        for name in ("limit_rate", "cancel_rate", "market_rate", "init_queue"):
            table = getattr(self, name)
            if len(table) != K:
                raise ValueError(f"{name} has {len(table)} rows, expected n_levels = {K}")
            widths = {len(row) for row in table}
            if len(widths) != 1:
                raise ValueError(f"{name} rows have different lengths {sorted(widths)}")
            b = widths.pop()
            if not 2 <= b <= MAX_BUCKETS:
                raise ValueError(f"{name} has {b} buckets, expected 2 to {MAX_BUCKETS}")
            if shape is None:
                shape = b
            elif b != shape:
                raise ValueError(f"{name} has {b} buckets, limit_rate has {shape}")
        for name in ("cancel_rate", "market_rate"):
            for j, row in enumerate(getattr(self, name)):
                if row[0] != 0.0:
                    raise ValueError(
                        f"{name}[{j}][0] = {row[0]!r} must be 0: an empty queue cannot be "
                        "cancelled or hit"
                    )
        for j, row in enumerate(self.init_queue):
            total = math.fsum(row)
            if abs(total - 1.0) > _PROB_TOLERANCE:
                raise ValueError(f"init_queue[{j}] sums to {total!r}, not 1")
        if not any(any(row) for row in self.market_rate) and self.hawkes is None:
            raise ValueError("market_rate is all zero and there is no hawkes: nothing ever trades")
        total = self.thinning_rate()
        if total > MAX_TOTAL_RATE:
            raise ValueError(
                f"the book's total event rate bound {total:.3g}/s is above {MAX_TOTAL_RATE:g}/s"
            )
        if self.s0 / self.tick_size < 4 * K:
            raise ValueError(
                f"s0 = {self.s0!r} is only {self.s0 / self.tick_size:.3g} ticks of "
                f"{self.tick_size:g}: at least 4 × n_levels = {4 * K} are needed for prices to "
                "stay positive"
            )
        return self

    # -- the market specification (execrl.sim.spec.MarketSpec) -------------------------------
    @property
    def baselines(self) -> tuple[str, ...]:
        """The rule-based policies `execrl evaluate` runs by default on the order book: the
        market-order schedules, the passive ones (post at the touch, sweep at each slice end /
        submit and leave, Nevmyvaka et al. 2006) and AC on the book's estimated cost model."""
        return ("twap", "passive_twap", "vwap", "pov", "ac", "immediate", "submit_and_leave")

    def default_order(self) -> ParentOrder:
        """The order run when none is given: buy 5,000 shares over 5 minutes at ``s0``
        (about 14 % of the calm book's volume over that time)."""
        return ParentOrder(order_id="LOB-1", symbol="SIM", side=Side.BUY, qty=5_000,
                           arrival_px=self.s0, start_ts=0.0, horizon_s=300.0)

    def for_order(self, order: ParentOrder) -> LOBMarketConfig:
        """This book with the order's horizon (seconds) and arrival price; refused by name
        where the two would leave the range the simulator handles (``validate_for_order``)."""
        update: dict[str, Any] = {"horizon_s": float(order.horizon)}
        if order.arrival_px is not None:
            update["s0"] = order.arrival_px
        for_order = LOBMarketConfig.from_dict({**self.model_dump(), **update})
        for_order.validate_for_order(order.qty)
        return for_order

    def build(self, n_envs: int, side: int) -> LOBMarket:
        from execrl.sim.lob import LOBMarket

        return LOBMarket(self, n_envs=n_envs, side=side)

    def estimate(self) -> LOBEstimate:
        """The book's statistics without the agent (``execrl.sim.lob.estimate_book``: a fixed
        simulation, cached per flow parameters)."""
        from execrl.sim.lob import estimate_book

        return estimate_book(self)

    def knowledge(self) -> MarketKnowledge:
        """The decision grid, a flat volume profile (the model has no intraday seasonality)
        and the cost model estimated from the book (``cost_model``)."""
        return MarketKnowledge(self.n_steps, self.volume_weights(), cost_model=self.cost_model())

    def cost_model(self) -> ACMarketConfig:
        """An Almgren–Chriss model of this book, in seconds (time_unit_s = 1), estimated from
        a simulation without the agent (``estimate``): σ = the standard deviation of the mid's
        change per √s; ε = the mean half spread; η/τ = tick / (2·d̄), d̄ the mean depth of the
        first five levels from the touch (walking a book of d̄ shares per tick costs
        tick·n / (2·d̄) a share beyond the touch for n shares: the linear-book approximation
        of the temporary impact); γ = 0 (the book's permanent impact is not estimated); the
        volume per second as ADV."""
        from execrl.sim.almgren_chriss import ACMarketConfig

        est = self.estimate()
        tick = self.tick_size
        return ACMarketConfig(
            s0=self.s0,
            sigma=est.sigma_ticks * tick,
            eta=self.temp_impact_per_share() * self.step_s,
            gamma=0.0,
            epsilon=0.5 * est.spread_ticks * tick,
            risk_aversion=self.risk_aversion,
            horizon=self.horizon_s,
            n_steps=self.n_steps,
            time_unit_s=1.0,
            adv=max(1.0, est.volume_per_s),
            volume_u_shape=0.0,
            volume_noise=0.0,
            pre_arrival_steps=max(1, self.pre_arrival_steps),
        )

    def risk_var_per_share2(self) -> float:
        """σ²·τ: the mid's variance over one step, per share held (price²)."""
        sigma = self.estimate().sigma_ticks * self.tick_size
        return sigma * sigma * self.step_s

    def temp_impact_per_share(self) -> float:
        """tick / (2·d̄), price per share per share of one child order (``cost_model``)."""
        depth = self.estimate().depth[:5]
        mean_depth = max(1.0, sum(depth) / len(depth))
        return self.tick_size / (2.0 * mean_depth)

    def expected_volumes(self) -> NDArray[np.float64]:
        """The estimated market volume of each step, in shares (the same every step)."""
        return np.full(self.n_steps, self.estimate().volume_per_s * self.step_s)

    def volume_weights(self) -> NDArray[np.float64]:
        return np.full(self.n_steps, 1.0 / self.n_steps)

    def closed_forms(
        self, qty: int, side: int, policies: list[str], step_limits: NDArray[np.int64] | None
    ) -> dict[str, Any]:
        """None: the order book has no closed-form execution costs."""
        return {}

    def to_results(self, qty: int, side: str) -> dict[str, Any]:
        """The ``"market"`` block of results.json: the whole configuration and the book's
        estimated statistics."""
        est = self.estimate()
        return {
            "model": "lob",
            "regime": self.regime,
            "X": qty,
            "S0": self.s0,
            "side": side,
            "T": self.horizon_s,
            "N": self.n_steps,
            "tick_size": self.tick_size,
            "lambda": self.risk_aversion,
            "estimate": {
                "sigma_ticks_per_sqrt_s": est.sigma_ticks,
                "mean_spread_ticks": est.spread_ticks,
                "mean_depth_from_touch": list(est.depth),
                "volume_per_s": est.volume_per_s,
                "events_per_s": est.events_per_s,
            },
            "config": self.model_dump(mode="json"),
        }

    def validate_for_order(self, qty: int) -> None:
        """Refuse, naming the fields, a book and order beyond what the simulator handles: more
        than ``MAX_STEPS`` decisions, more than ``MAX_EVENTS_PER_ORDER`` candidate events a
        book, or more trades in the features' 30 s window than the feature builder keeps."""
        steps = self.horizon_s / self.step_seconds
        if round(steps) > MAX_STEPS:
            raise ConfigError(
                f"market field 'step_seconds' = {self.step_seconds:g} splits the horizon of "
                f"{self.horizon_s:g} s into {steps:.0f} steps, more than {MAX_STEPS}"
            )
        events = self.thinning_rate() * (self.horizon_s + self.warmup_s + self.step_s)
        if events > MAX_EVENTS_PER_ORDER:
            raise ConfigError(
                f"the order's horizon of {self.horizon_s:g} s (+ market field 'warmup_s' = "
                f"{self.warmup_s:g}) at this book's event rate bound {self.thinning_rate():.3g}/s "
                f"is {events:.3g} events a book, more than {MAX_EVENTS_PER_ORDER:g}"
            )
        from execrl.sim.lob import max_trades_in_window

        trades, cap = max_trades_in_window(self)
        if trades > cap:
            raise ConfigError(
                f"market fields 'market_rate' / 'hawkes' allow up to {trades:.3g} trades in 30 "
                f"s, more than the feature builder keeps ({cap})"
            )

    # -- derived ---------------------------------------------------------------------------
    @property
    def pre_arrival_steps(self) -> int:
        """Decision steps of warm-up simulated before the order arrives."""
        return math.ceil(self.warmup_s / self.step_s - 1e-9) if self.warmup_s > 0 else 0

    @property
    def tick_size(self) -> float:
        """The simulated price grid (currency)."""
        return self.exchange_tick * self.ticks_per_level

    @property
    def n_buckets(self) -> int:
        return len(self.limit_rate[0])

    @property
    def n_steps(self) -> int:
        return max(1, round(self.horizon_s / self.step_seconds))

    @property
    def step_s(self) -> float:
        """The decision interval actually used: horizon_s / n_steps."""
        return self.horizon_s / self.n_steps

    def tables(self) -> tuple[NDArray[np.float64], ...]:
        """(limit, cancel, market, init_queue) as (n_levels, n_buckets) float64 arrays."""
        return tuple(
            np.ascontiguousarray(np.asarray(getattr(self, name), dtype=np.float64))
            for name in ("limit_rate", "cancel_rate", "market_rate", "init_queue")
        )

    def thinning_rate(self) -> float:
        """Λ: the constant candidate-event rate of one book (events/s) that the simulator
        thins down to the actual intensities (each flow channel gets a fixed slot as wide as
        its largest rate)."""
        limit, cancel, market, _ = self.tables()
        per_side = limit.max(axis=1).sum() + cancel.max(axis=1).sum() + market.max()
        if self.hawkes is not None:
            per_side += self.hawkes.max_rate
        return float(2.0 * per_side)


# -- named regimes (seed 001 §11, seed 002) ---------------------------------------------------
#: The calm book's volatility, ticks per √s (``estimate_book(LOBMarketConfig())``; a test
#: keeps it in step): every regime's ``volatility`` feature reads 1 at calm's level.
CALM_VOL_TICKS = 0.274


def _regime(name: str, flow: dict[str, float], theta: float, **fields: Any) -> LOBMarketConfig:
    return LOBMarketConfig(regime=name, theta=theta, reference_vol_ticks=CALM_VOL_TICKS,
                           **_default_tables(**flow), **fields)


_STRESSED_FLOW = {"touch": 1.0, "behind": 0.55, "cancel_per_aes": 0.3, "market": 0.7}

#: name -> (what it is, its configuration); measured with ``estimate_book`` (s0 = 25, tick
#: 0.01, i.e. 4 bps a tick): σ in ticks per √s, mean spread in ticks, mean depth of the first
#: five levels, volume per second.
LOB_REGIMES: dict[str, tuple[str, LOBMarketConfig]] = {
    "calm": ("queue-reactive large-tick book: sigma 0.27 tick/sqrt(s) (1.1 bps), spread 1.07 "
             "ticks, depth 420..190 shares over the first 5 levels, 120 shares/s traded",
             _regime("calm", {}, 0.5)),
    "stressed": ("volatility x2 (0.57 tick/sqrt(s)), wider spread (1.38 ticks), about half "
                 "the depth (210..110), the same volume",
                 _regime("stressed", _STRESSED_FLOW, 0.55)),
    "crash": ("the stressed book with a -10% move over a quarter of the horizon from its "
              "first quarter (forced sweeps of the bid; measured -11.4% over the window with "
              "the flow's own reaction)",
              _regime("crash", _STRESSED_FLOW, 0.55,
                      shock=ShockConfig(move=-0.10, start=0.25, duration=0.25))),
    "flash_crash": ("the calm book falling 10% within 5% of the horizon from 30% of it, and "
                    "back within the next 10%",
                    _regime("flash_crash", {}, 0.5,
                            shock=ShockConfig(move=-0.10, start=0.30, duration=0.05,
                                              recovery=0.10))),
    "illiquid": ("a thin book: a third of calm's depth (160..70), spread 1.65 ticks, sigma "
                 "0.64 tick/sqrt(s), a quarter of the volume (31 shares/s)",
                 _regime("illiquid", {"touch": 0.45, "behind": 0.3, "cancel_per_aes": 0.3,
                                      "market": 0.2}, 0.5)),
}
