"""Historical replay: recorded markets behind the same protocol as the simulators.

``n_envs`` parent orders (episodes) replay one recorded event stream (``execrl.data.store``)
together, each from its own start time: a seeded random time of the day, drawn from the
episode's counter-based key (``execrl.sim.rng``), so every policy meets the same episodes and
episode i is the same in every batch size. A step advances each episode's pointer through the
events of its decision interval in one compiled kernel; nothing loops over episodes or events
in Python.

How a child order meets the recording (the recording cannot react to us; what follows is what
a replay can honestly do, and each choice is a field of ``ReplayMarketConfig``):

- **Latency.** An order sent at the start of a step reaches the market ``order_latency_s``
  later, plus an exponential delay of mean ``latency_jitter_s`` drawn per order (key, stream,
  step), truncated at the step's end. It meets the book as of its arrival: every event stamped
  at or before the arrival is applied first, so an order never trades on an event stamped
  before it arrived. A cancel travels with the new order; the working order may still fill
  until the cancel arrives. Features see the market ``market_data_delay_s`` late.
- **Marketable orders** (market, IOC, marketable limit, the crossing part of a limit) walk
  the recorded book level by level up to their limit and pay each level's price. Beyond the
  file's deepest level the book is extrapolated flat: one level a tick further each time,
  each holding the visible levels' mean size. The recording refills what we took by its next
  event (no depletion), so the cost of size comes from walking the book and from the impact
  model below.
- **Transient impact** (``impact``: off, a size per share, or "calibrated"): our marketable
  fills push the prices we trade at and the mid we are marked at by κ per share in our
  direction, decaying as exp(-t / ``impact_decay_s``) (a propagator). "calibrated" sets κ to
  the data's Kyle λ (one-minute mid changes regressed on the signed traded volume). The
  recorded book, and so every passive fill and queue, are not shifted.
- **Passive orders** rest at their limit price behind what rests there. ``queue="exact"``
  (order-by-order data, LOBSTER): the order joins behind the orders resting at its price and
  moves up only as exactly those orders (known by their ids; orders resting before the file
  starts have none and are ahead) are cancelled or executed; an execution of an order behind
  us, a hidden execution once nothing displayed is ahead, a trade through our price, or an
  incoming order that crosses our price fills us. Estimated queues (L2 data, or LOBSTER with
  its ids ignored, to measure the estimators): we join behind the displayed size; traded
  volume at our price takes the queue ahead first; other decreases of the level (cancels) are
  shared out by the rule: ``risk_averse`` (all cancels behind us), or the probabilistic family
  of Moallemi & Yuan / hftbacktest: P(cancel behind us) = f(behind) / (f(behind) + f(ahead))
  with f(x) = x^n (``power``, n = ``queue_power``) or log(1 + x) (``log``), and
  ahead' = ahead - (1 - P)·c + min(behind - P·c, 0). One order works per episode at a time.
- **Fees**: ``taker_fee_per_share`` on marketable fills, ``maker_fee_per_share`` on passive
  ones (negative = a rebate). Limit prices must lie on the data's tick grid.
- **Trades-only data** (no book): a one-level book at the last trade ± a half spread proxy
  from volatility (``proxy_spread_k`` × the standard deviation of trade-to-trade price
  changes, at least one tick) with unlimited size: marketable orders pay the proxy half spread
  plus impact, passive ones fill only when a trade prints through them.

Walk-forward: ``split="train"`` draws episodes that end before the split point and ``"test"``
ones that start after it (the first ``train_fraction`` of the days with several days, of the
window's time with one); the split is in ``to_results``. Episodes overlapping a halt are drawn
again.

Features come from the replayed events through the market layer's ``FeatureBuilder`` (trades
with their aggressor side and the top of the book), fed only events stamped at or before the
observation time (the step's end less the market-data delay): no look-ahead.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from numba import njit
from numpy.typing import NDArray
from pydantic import ConfigDict, Field

from execrl.data.store import (
    EXECUTE,
    EXECUTE_HIDDEN,
    HALT,
    SUBMIT,
    TRADE,
    EventStore,
)
from execrl.domain import ConfigError, OrderType, ParentOrder, Side
from execrl.market.events import FILL_DTYPE, TRADE_DTYPE
from execrl.sim.base import (
    ORDER_TYPE_CODES,
    REJECT_NO_PRICE,
    REJECT_OFF_TICK,
    REJECT_WORKING,
    ChildOrderBatch,
    FillBatch,
)
from execrl.sim.rng import episode_keys, exponential, uniform
from execrl.sim.spec import MarketKnowledge, SpecModel

NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]

QUEUE_MODELS = ("exact", "risk_averse", "power", "log")
_Q_EXACT, _Q_RISK_AVERSE, _Q_POWER, _Q_LOG = range(4)
# counter-based streams (execrl.sim.rng) of a replay episode
_STREAM_START, _STREAM_LATENCY = 1, 2
_MARKET, _LIMIT, _MARKETABLE, _IOC = (ORDER_TYPE_CODES[t] for t in (
    OrderType.MARKET, OrderType.LIMIT, OrderType.MARKETABLE_LIMIT, OrderType.IOC))
#: the size of a trades-only proxy level: more than any order can take
_UNLIMITED = 1 << 50
#: draws of an episode start before one clear of halts is given up
_START_TRIES = 64


class ReplayMarketConfig(SpecModel):
    """A replay of recorded data (module docstring). ``data``: an event store folder
    (``execrl data import``), a LOBSTER zip, or ``synthetic:SEED`` (a generated LOBSTER-format
    day: tests and examples without data)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    model: Literal["replay"] = "replay"
    data: Annotated[str, Field(min_length=1)] = "synthetic:0"
    levels: Annotated[int, Field(ge=1, le=50)] | None = None
    """Book levels to read from a LOBSTER zip (default: all it has)."""
    horizon: Annotated[float, Field(gt=0, le=86_400 * 365, allow_inf_nan=False)] = 600.0
    """The order's horizon in seconds (set by the order, ``for_order``)."""
    n_steps: Annotated[int, Field(ge=1, le=10_000)] = 10
    risk_aversion: NonNegative = 0.0
    queue: Literal["exact", "risk_averse", "power", "log"] = "exact"
    queue_power: Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)] = 2.0
    order_latency_s: NonNegative = 0.0
    latency_jitter_s: NonNegative = 0.0
    """Mean of an exponential delay added to each order's latency (0: constant latency)."""
    market_data_delay_s: NonNegative = 0.0
    taker_fee_per_share: Annotated[float, Field(ge=-1, le=1, allow_inf_nan=False)] = 0.0
    maker_fee_per_share: Annotated[float, Field(ge=-1, le=1, allow_inf_nan=False)] = 0.0
    impact: Literal["off", "calibrated"] | NonNegative = "off"
    """Transient impact κ in currency per share, "calibrated" (the data's Kyle λ) or "off"."""
    impact_decay_s: Positive = 60.0
    split: Literal["all", "train", "test"] = "all"
    train_fraction: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = 0.5
    window_start_s: NonNegative | None = None
    """Episodes start at or after this time of the data's clock (default: its first event +
    ``pre_arrival_s``)."""
    window_end_s: NonNegative | None = None
    """Episodes end at or before this time (default: the last event)."""
    pre_arrival_s: NonNegative = 300.0
    """Seconds of market before arrival that the features and the arrival VWAP see."""
    proxy_spread_k: Positive = 1.0
    """Trades-only data: half spread = k × std of trade-to-trade price changes."""

    # -- what the data says ------------------------------------------------------------------
    @property
    def replay_data(self) -> ReplayData:
        return load_replay_data(self.data, self.levels, self.proxy_spread_k)

    @property
    def stats(self) -> DataStatistics:
        """The data's estimates (volatility, volume, spread, slope, Kyle λ) from the train
        part of a walk-forward split, or from all of it with ``split="all"`` (in-sample)."""
        d = self.replay_data
        end = math.inf if self.split == "all" else d.split_time(*self._window(),
                                                                self.train_fraction)
        return d.statistics(end)

    @property
    def tau(self) -> float:
        return self.horizon / self.n_steps

    @property
    def s0(self) -> float:
        """The data's mean mid (the notional's price scale), over the train part of a
        walk-forward split (over all of it with ``split="all"``)."""
        d = self.replay_data
        end = d.t[-1] if self.split == "all" else d.split_time(*self._window(),
                                                               self.train_fraction)
        return d.mean_mid(float(d.t[0]), float(end))

    @property
    def kappa(self) -> float:
        """The transient impact per share in currency (0 when off)."""
        if self.impact == "off":
            return 0.0
        if self.impact == "calibrated":
            return self.stats.kyle_lambda
        return float(self.impact)

    def start_range(self) -> tuple[float, float]:
        """[first, last] start time of an episode: the window less the horizon, on the split's
        side; refused by name where no episode fits."""
        d = self.replay_data
        lo = d.t[0] + self.pre_arrival_s if self.window_start_s is None else self.window_start_s
        hi = d.t[-1] if self.window_end_s is None else self.window_end_s
        if self.split != "all":
            cut = d.split_time(lo, hi, self.train_fraction)
            lo, hi = (lo, cut) if self.split == "train" else (cut, hi)
        last = hi - self.horizon
        if not last >= lo:
            raise ConfigError(
                f"market field 'horizon' = {self.horizon:g} s does not fit in the data's "
                f"episode window [{lo:.1f}, {hi:.1f}] s ({self.split} part of {self.data!r}): "
                "shorten the order's horizon or widen window_start_s / window_end_s"
            )
        return float(lo), float(last)

    # -- the market specification (execrl.sim.spec.MarketSpec) -------------------------------
    def for_order(self, order: ParentOrder) -> ReplayMarketConfig:
        """This replay with the order's horizon (seconds); the order's arrival price is the
        recorded mid at each episode's start, not the order's ``arrival_px``."""
        spec = ReplayMarketConfig.from_dict({**self.model_dump(), "horizon": order.horizon})
        spec.check()
        return spec

    def check(self) -> None:
        """Refuse, by name, what the data cannot do: an exact queue without order ids, a
        horizon that does not fit, a latency or delay beyond the horizon."""
        d = self.replay_data
        if self.queue == "exact" and not d.has_order_ids:
            raise ConfigError(
                f"market field 'queue' = 'exact' needs order ids (LOBSTER), which {self.data!r} "
                "lacks; choose risk_averse, power or log"
            )
        self.start_range()
        for name in ("order_latency_s", "market_data_delay_s"):
            if getattr(self, name) >= self.horizon:
                raise ConfigError(f"market field {name!r} = {getattr(self, name):g} s is not "
                                  f"shorter than the horizon of {self.horizon:g} s")

    def build(self, n_envs: int, side: int) -> ReplayMarket:
        self.check()
        return ReplayMarket(self, n_envs=n_envs, side=side)

    def knowledge(self) -> MarketKnowledge:
        """A flat volume curve (episodes start at random times of the day, so the expected
        curve over the horizon is flat) and an Almgren–Chriss cost model estimated from the
        data (``estimated_cost_model``)."""
        w = np.full(self.n_steps, 1.0 / self.n_steps)
        return MarketKnowledge(self.n_steps, w, cost_model=self.estimated_cost_model())

    def estimated_cost_model(self) -> Any:
        """Almgren–Chriss parameters from the data, in a time unit of the horizon: σ from the
        one-minute mid changes, ε the mean half spread, η/τ the mean slope of the visible book
        (price per share walked), γ the Kyle λ (clipped so that η − γτ/2 > 0)."""
        from execrl.sim.almgren_chriss import ACMarketConfig

        st = self.stats
        unit = self.horizon
        tau = 1.0 / self.n_steps
        eta = max(st.book_slope * tau, 1e-12)
        gamma = min(st.kyle_lambda, 1.9 * eta / tau)
        return ACMarketConfig(
            s0=self.s0, sigma=st.sigma_per_sqrt_s * math.sqrt(unit), eta=eta, gamma=gamma,
            epsilon=st.half_spread, risk_aversion=self.risk_aversion, horizon=1.0,
            n_steps=self.n_steps, time_unit_s=unit,
            adv=max(st.volume_per_s * unit, 1.0), volume_noise=0.0, volume_u_shape=0.0,
        )

    def risk_var_per_share2(self) -> float:
        """σ²·τ from the data: the price variance one held share adds per step."""
        return self.stats.sigma_per_sqrt_s**2 * self.tau

    def temp_impact_per_share(self) -> float:
        """The data's median book slope: price per share a marketable order walks."""
        return self.stats.book_slope

    def expected_volumes(self) -> NDArray[np.float64]:
        """The data's mean volume per second × the step length, every step."""
        return np.full(self.n_steps, self.stats.volume_per_s * self.tau)

    def closed_forms(
        self, qty: int, side: int, policies: list[str], step_limits: NDArray[np.int64] | None
    ) -> dict[str, Any]:
        return {}  # a recording has no closed forms

    @property
    def baselines(self) -> tuple[str, ...]:
        """The rule-based policies `execrl evaluate` runs by default on a replay (limit
        orders rest in the recorded queues, so the passive baselines run too)."""
        return ("twap", "passive_twap", "vwap", "pov", "ac", "immediate", "submit_and_leave")

    def default_order(self) -> ParentOrder:
        """The order run when none is given: buy 1,000 shares over 30 minutes of the data,
        at the price the episode meets."""
        return ParentOrder(order_id="REPLAY-1", symbol="DATA", side=Side.BUY, qty=1_000,
                           start_ts=0.0, horizon_s=1800.0)

    def to_results(self, qty: int, side: str) -> dict[str, Any]:
        d = self.replay_data
        lo, last = self.start_range()
        return {
            "model": "replay", "X": qty, "S0": self.s0, "T": self.horizon, "N": self.n_steps,
            "lambda": self.risk_aversion, "side": side, "data": self.data,
            "symbol": d.symbol, "days": d.days, "levels": d.levels,
            "queue": self.queue, "queue_power": self.queue_power,
            "order_latency_s": self.order_latency_s, "latency_jitter_s": self.latency_jitter_s,
            "market_data_delay_s": self.market_data_delay_s,
            "taker_fee_per_share": self.taker_fee_per_share,
            "maker_fee_per_share": self.maker_fee_per_share,
            "impact": self.impact, "impact_kappa_per_share": self.kappa,
            "impact_decay_s": self.impact_decay_s,
            "walk_forward": {"split": self.split, "train_fraction": self.train_fraction,
                             "episode_starts_s": [lo, last],
                             "split_at_s": d.split_time(*self._window(), self.train_fraction)},
            "tick": d.tick_size, "impact_model": "transient (propagator), marketable fills "
            "only; the recorded book does not react",
        }

    def _window(self) -> tuple[float, float]:
        d = self.replay_data
        lo = d.t[0] + self.pre_arrival_s if self.window_start_s is None else self.window_start_s
        hi = d.t[-1] if self.window_end_s is None else self.window_end_s
        return float(lo), float(hi)


# -- the data, prepared once per process ---------------------------------------------------------
class ReplayData:
    """The event columns a replay kernel reads (contiguous arrays; prices as float64 price
    units), with what the data says about itself (volatility, spread, slope, Kyle λ)."""

    def __init__(self, store: EventStore, name: str, proxy_spread_k: float = 1.0):
        m = store.meta
        self.name = name
        self.symbol = m.symbol
        self.days = [d.get("date", "") for d in m.days]
        self.day_first = np.array([d["first"] for d in m.days], dtype=np.int64)
        self.price_scale = float(m.price_scale)
        self.tick = float(m.tick)
        self.tick_size = m.tick / m.price_scale
        self.has_order_ids = m.has_order_ids
        self.t = np.ascontiguousarray(store.t, dtype=np.float64)
        self.kind = np.ascontiguousarray(store.kind, dtype=np.int8)
        self.size = np.ascontiguousarray(store.size, dtype=np.int64)
        self.price = np.ascontiguousarray(store.price, dtype=np.float64)
        self.side = np.ascontiguousarray(store.side, dtype=np.int8)
        n = self.t.size
        self.sub_row = _submission_rows(np.asarray(store.order_id), self.kind) if (
            m.has_order_ids) else np.full(n, -1, dtype=np.int64)
        self.seq = np.arange(n, dtype=np.int64)  # the kernel's event numbers (``_step``)
        trade = np.isin(self.kind, (EXECUTE, EXECUTE_HIDDEN, 6, TRADE))
        self.is_trade = trade
        if m.has_book:
            self.levels = m.levels
            self.bid_px = np.ascontiguousarray(store.bid_px, dtype=np.float64)
            self.bid_qty = np.ascontiguousarray(store.bid_qty, dtype=np.float64)
            self.ask_px = np.ascontiguousarray(store.ask_px, dtype=np.float64)
            self.ask_qty = np.ascontiguousarray(store.ask_qty, dtype=np.float64)
            self.proxy_half_spread = math.nan
        else:  # trades only: a one-level proxy book around the last trade
            self.levels = 1
            px = self.price[trade]
            dp = np.diff(px)
            half = max(self.tick, round(proxy_spread_k * float(dp.std()) / self.tick) * self.tick
                       if dp.size > 1 else self.tick)
            self.proxy_half_spread = half
            last = np.maximum.accumulate(np.where(trade, np.arange(n), -1))
            first_px = px[0] if px.size else 0.0
            ref = np.where(last >= 0, self.price[np.maximum(last, 0)], first_px)
            ref = np.round(ref / self.tick) * self.tick
            self.bid_px = (ref - half).reshape(n, 1).copy()
            self.ask_px = (ref + half).reshape(n, 1).copy()
            self.bid_qty = np.full((n, 1), float(_UNLIMITED))
            self.ask_qty = np.full((n, 1), float(_UNLIMITED))
        two = (self.bid_qty[:, 0] > 0) & (self.ask_qty[:, 0] > 0)
        mid = np.where(two, 0.5 * (self.bid_px[:, 0] + self.ask_px[:, 0]), np.nan)
        self.mid_units = _carry_forward(mid)
        # prefix sums of the traded notional and volume (arrival VWAP in O(1) per episode)
        tr_size = np.where(trade, self.size, 0).astype(np.float64)
        self.cum_volume = np.concatenate([[0.0], np.cumsum(tr_size)])
        self.cum_notional = np.concatenate([[0.0], np.cumsum(tr_size * self.price)])
        halt = np.flatnonzero(self.kind == HALT)
        spans = []
        start = None
        for r in halt.tolist():
            code = int(self.price[r])
            if code == -1 and start is None:
                start = self.t[r]
            elif code == 1 and start is not None:
                spans.append((start, self.t[r]))
                start = None
        if start is not None:
            spans.append((start, np.inf))
        self.halts = np.array(spans, dtype=np.float64).reshape(-1, 2)
        self._stats: dict[float, DataStatistics] = {}

    def statistics(self, end_t: float = math.inf) -> DataStatistics:
        """What the data says about itself, from its events up to ``end_t`` only (the train
        part of a walk-forward split: nothing a test episode meets is used)."""
        key = float(end_t)
        if key not in self._stats:
            self._stats[key] = _statistics(self, int(np.searchsorted(self.t, end_t, "right")))
        return self._stats[key]

    def mean_mid(self, lo: float, hi: float) -> float:
        a, b = np.searchsorted(self.t, [lo, hi])
        m = self.mid_units[a:max(b, a + 1)]
        m = m[np.isfinite(m)]
        return float(m.mean() / self.price_scale) if m.size else float(
            np.nanmean(self.mid_units) / self.price_scale)

    def split_time(self, lo: float, hi: float, fraction: float) -> float:
        """The walk-forward split: the first day after ``fraction`` of the days when there
        are several, else ``fraction`` of the window's time."""
        if self.day_first.size > 1:
            k = max(1, min(self.day_first.size - 1, round(fraction * self.day_first.size)))
            return float(self.t[self.day_first[k]])
        return lo + fraction * (hi - lo)


@dataclass(frozen=True)
class DataStatistics:
    """Estimates from a part of the data (``ReplayData.statistics``)."""

    volume_per_s: float
    sigma_per_sqrt_s: float
    """Standard deviation of the mid's one-minute changes, per √second (currency)."""
    kyle_lambda: float
    """One-minute mid change per share of signed traded volume (currency per share, >= 0)."""
    half_spread: float
    """Time-weighted mean half spread (currency)."""
    book_slope: float
    """Median price per share from the touch to the deepest visible level (currency)."""


def _statistics(d: ReplayData, n: int) -> DataStatistics:
    n = max(n, 2)
    t = d.t[:n]
    mid = d.mid_units[:n] / d.price_scale
    trade = d.is_trade[:n]
    span = max(t[-1] - t[0], 1e-9)
    volume_per_s = float(d.size[:n][trade].sum()) / span
    grid = np.arange(t[0], t[-1], 60.0)
    sigma = kyle = 0.0
    if grid.size >= 3:
        idx = np.searchsorted(t, grid, side="right") - 1
        dm = np.diff(mid[np.maximum(idx, 0)])
        signed = np.where(trade, -d.side[:n] * d.size[:n], 0).astype(np.float64)
        cum = np.concatenate([[0.0], np.cumsum(signed)])
        flow = np.diff(cum[np.searchsorted(t, grid, side="right")])
        ok = np.isfinite(dm)
        if ok.sum() > 2:
            sigma = float(dm[ok].std() / math.sqrt(60.0))
            var = float(np.var(flow[ok]))
            kyle = float(np.cov(dm[ok], flow[ok])[0, 1] / var) if var > 0 else 0.0
    bq, aq = d.bid_qty[:n], d.ask_qty[:n]
    bp, ap = d.bid_px[:n], d.ask_px[:n]
    two = (bq[:, 0] > 0) & (aq[:, 0] > 0)
    dt = np.diff(t, append=t[-1])[two]
    spread = (ap[two, 0] - bp[two, 0]) / d.price_scale
    half = float(np.average(spread, weights=dt if dt.sum() > 0 else None)) / 2 if (
        spread.size) else 0.0
    depth = aq.sum(axis=1) + bq.sum(axis=1)
    ok = two & (depth > 0) & (depth < _UNLIMITED)
    slope = d.tick / d.price_scale / 1_000.0
    if d.levels > 1 and ok.any():
        deepest = np.where(aq[ok, -1] > 0, ap[ok, -1], ap[ok, 0])
        slope = float(np.median(2.0 * (deepest - ap[ok, 0]) / d.price_scale
                                / np.maximum(depth[ok], 1.0)))
    return DataStatistics(volume_per_s=volume_per_s, sigma_per_sqrt_s=sigma,
                          kyle_lambda=max(kyle, 0.0), half_spread=half,
                          book_slope=max(slope, 1e-12))


def _carry_forward(x: NDArray[np.float64]) -> NDArray[np.float64]:
    ok = np.isfinite(x)
    idx = np.maximum.accumulate(np.where(ok, np.arange(x.size), -1))
    out = np.where(idx >= 0, x[np.maximum(idx, 0)], np.nan)
    first = np.flatnonzero(ok)
    if first.size:
        out[: first[0]] = x[first[0]]
    return out


def _submission_rows(order_id: NDArray[np.int64], kind: NDArray[np.int8]) -> NDArray[np.int64]:
    """Per event, the row at which its order was submitted (-1: before the file or no id)."""
    subs = np.flatnonzero(kind == SUBMIT)
    ids = order_id[subs]
    order = np.argsort(ids, kind="stable")
    ids_sorted, rows_sorted = ids[order], subs[order]
    pos = np.searchsorted(ids_sorted, order_id)
    pos = np.minimum(pos, max(ids_sorted.size - 1, 0))
    found = (ids_sorted.size > 0) & (ids_sorted[pos] == order_id) & (order_id != 0)
    return np.where(found, rows_sorted[pos] if ids_sorted.size else -1, -1).astype(np.int64)


@functools.lru_cache(maxsize=8)
def _load(data: str, levels: int | None, proxy_spread_k: float, stamp: float) -> ReplayData:
    from execrl.data.lobster import read_lobster
    from execrl.data.store import from_lobster, is_store, open_store

    if data.startswith("synthetic"):
        from execrl.data.synthetic import synthetic_lobster

        _, _, seed = data.partition(":")
        try:
            s = int(seed or 0)
        except ValueError:
            raise ConfigError(f"market field 'data' = {data!r}: synthetic:SEED needs an "
                              "integer seed") from None
        day = synthetic_lobster(20_000, levels=levels or 5, seed=s)
        return ReplayData(from_lobster(day), data, proxy_spread_k)
    path = Path(data)
    if is_store(path):
        if levels is not None:
            raise ConfigError("market field 'levels' applies to a LOBSTER file, not a store "
                              "(import it with --levels)")
        return ReplayData(open_store(path), data, proxy_spread_k)
    if not path.exists():
        raise ConfigError(f"market field 'data' = {data!r}: no such store or file")
    return ReplayData(from_lobster(read_lobster(path, levels=levels)), data, proxy_spread_k)


def load_replay_data(data: str, levels: int | None = None,
                     proxy_spread_k: float = 1.0) -> ReplayData:
    """The prepared data of ``data`` (cached per process while the file is unchanged)."""
    try:
        stamp = Path(data).stat().st_mtime if not data.startswith("synthetic") else 0.0
    except OSError:
        stamp = -1.0
    return _load(data, levels, proxy_spread_k, stamp)


# -- the compiled step -----------------------------------------------------------------------------
@njit(cache=True)
def _draw_starts(keys, lo, span, halts, horizon, out):  # type: ignore[no-untyped-def]
    """Episode start times uniform on [lo, lo + span] from each key, drawn again (counter + 1)
    while the episode would overlap a halt."""
    for i in range(keys.shape[0]):
        t0 = lo + span * uniform(keys[i], _STREAM_START, 0)
        for c in range(1, _START_TRIES):
            clear = True
            for h in range(halts.shape[0]):
                if t0 < halts[h, 1] and t0 + horizon > halts[h, 0]:
                    clear = False
                    break
            if clear:
                break
            t0 = lo + span * uniform(keys[i], _STREAM_START, c)
        out[i] = t0


@njit(cache=True)
def _step(  # type: ignore[no-untyped-def]
    t, kind, size, price, side_of, sub_row, seq, bid_px, bid_qty, ask_px, ask_qty,
    active, keys, t0, k, ptr, dt, lat_const, lat_jitter,
    parent_side, queue_rule, queue_power, taker_fee, maker_fee, tick, kappa, decay_s,
    arrival_units,
    w_qty, w_px, w_ahead, w_join, w_level, w_pending, w_expire, w_child,
    imp, imp_t, iv_num, iv_den, last_vol,
    o_qty, o_type, o_px, o_ttl, o_cancel, o_child, reject,
    f_qty, f_notional, f_passive, f_fees, f_nfills, f_cancelled,
    record, ev_env, ev_child, ev_t, ev_qty, ev_px, ev_passive, ev_fee,
):
    """One decision step of every active episode (module docstring). Prices are float64 in
    the data's price units; fills are reported in them too (the caller scales to currency).
    ``seq``: each event row's number in the recording (``sub_row`` counts in it; the replay's
    rows are the recording, ``seq[r] == r``; the paper market's rows are a step's streamed
    events, ``execrl.service.paper``). Returns the number of fill rows written."""
    n_ev_total = t.shape[0]
    levels = bid_px.shape[1]
    n_rows = 0
    for i in range(active.shape[0]):
        f_qty[i] = 0
        f_notional[i] = 0.0
        f_passive[i] = 0
        f_fees[i] = 0.0
        f_nfills[i] = 0
        f_cancelled[i] = 0
        if not active[i]:
            continue
        s = parent_side
        ts = t0[i] + k[i] * dt
        te = ts + dt
        lat = lat_const
        if lat_jitter > 0.0:
            lat += lat_jitter * exponential(keys[i], _STREAM_LATENCY, k[i])
        ta = ts + lat
        if ta > te:
            ta = te
        vol = 0.0
        for phase in range(2):
            until = ta if phase == 0 else te
            # -- the recorded events up to ``until``: the market's volume, the working order --
            while ptr[i] < n_ev_total and t[ptr[i]] <= until:
                r = ptr[i]
                ptr[i] = r + 1
                kr = kind[r]
                is_trade = kr == 4 or kr == 5 or kr == 6 or kr == 8
                if is_trade:
                    vol += size[r]
                    iv_num[i] += size[r] * price[r]
                    iv_den[i] += size[r]
                if w_qty[i] <= 0:
                    continue
                wp = w_px[i]
                fill = 0
                same = side_of[r] == s
                if is_trade and kr != 6 and same:
                    through = price[r] < wp if s == 1 else price[r] > wp
                    if through:
                        fill = size[r]
                    elif price[r] == wp:
                        if kr == 5:  # hidden liquidity comes after every displayed order
                            if w_ahead[i] <= 0.0:
                                fill = size[r]
                        elif queue_rule == _Q_EXACT:
                            if sub_row[r] < w_join[i] and w_ahead[i] > 0.0:
                                w_ahead[i] = max(w_ahead[i] - size[r], 0.0)
                            else:  # an order behind us traded: we were first
                                fill = size[r]
                        else:
                            took = min(w_ahead[i], float(size[r]))
                            w_ahead[i] -= took
                            w_pending[i] += size[r]  # the recorded level falls by all of it
                            fill = int(size[r] - took)
                elif kr == 1 and side_of[r] == -s:  # an incoming order that crosses ours
                    if (s == 1 and price[r] <= wp) or (s == -1 and price[r] >= wp):
                        fill = size[r]
                elif (kr == 2 or kr == 3) and same and price[r] == wp and queue_rule == _Q_EXACT:
                    if sub_row[r] < w_join[i]:
                        w_ahead[i] = max(w_ahead[i] - size[r], 0.0)
                if queue_rule != _Q_EXACT and kr != 5 and kr != 6 and kr != 7:
                    # the level at our price, as this event left it (kept when out of view)
                    book_px = bid_px if s == 1 else ask_px
                    book_q = bid_qty if s == 1 else ask_qty
                    level = -1.0
                    deepest = book_q[r, levels - 1] > 0
                    for j in range(levels):
                        if book_q[r, j] > 0 and book_px[r, j] == wp:
                            level = book_q[r, j]
                            break
                    if level < 0.0:
                        beyond = deepest and ((s == 1 and wp < book_px[r, levels - 1]) or (
                            s == -1 and wp > book_px[r, levels - 1]))
                        level = w_level[i] if beyond else 0.0
                    dec = w_level[i] - level
                    if dec > 0.0:
                        from_trades = min(dec, w_pending[i])
                        w_pending[i] -= from_trades
                        c = dec - from_trades
                        if c > 0.0:
                            front = w_ahead[i]
                            back = max(w_level[i] - from_trades - front, 0.0)
                            if queue_rule == _Q_RISK_AVERSE:
                                p_back = 1.0
                            elif queue_rule == _Q_POWER:
                                fb = back**queue_power
                                ff = front**queue_power
                                p_back = fb / (fb + ff) if fb + ff > 0.0 else 1.0
                            else:
                                fb = math.log1p(back)
                                ff = math.log1p(front)
                                p_back = fb / (fb + ff) if fb + ff > 0.0 else 1.0
                            front = front - (1.0 - p_back) * c + min(back - p_back * c, 0.0)
                            w_ahead[i] = min(max(front, 0.0), level)
                    w_level[i] = level
                    if w_ahead[i] > level:
                        w_ahead[i] = level
                if fill > 0:
                    q = min(fill, w_qty[i])
                    w_qty[i] -= q
                    f_qty[i] += q
                    f_passive[i] += q
                    f_notional[i] += q * wp
                    fee = q * maker_fee
                    f_fees[i] += fee
                    f_nfills[i] += 1
                    iv_num[i] += q * wp
                    iv_den[i] += q
                    if record:
                        ev_env[n_rows] = i
                        ev_child[n_rows] = w_child[i]
                        ev_t[n_rows] = t[r] - t0[i]
                        ev_qty[n_rows] = q
                        ev_px[n_rows] = wp
                        ev_passive[n_rows] = True
                        ev_fee[n_rows] = fee
                        n_rows += 1
            if phase == 1:
                break
            # -- at the arrival: the cancel, then the new order ------------------------------
            if o_cancel[i] and w_qty[i] > 0:
                f_cancelled[i] += w_qty[i]
                w_qty[i] = 0
            q_new = o_qty[i]
            if q_new <= 0 or reject[i] != 0:
                continue
            ty = o_type[i]
            rests = ty == _LIMIT and o_ttl[i] > 0
            if rests and w_qty[i] > 0:
                reject[i] = REJECT_WORKING
                continue
            limit = o_px[i]
            if ty == _MARKET:
                limit = math.inf if s == 1 else -math.inf
            b = ptr[i] - 1
            opp_px = ask_px if s == 1 else bid_px
            opp_q = ask_qty if s == 1 else bid_qty
            shift = 0.0
            if kappa > 0.0:
                shift = imp[i] * math.exp(-(ta - imp_t[i]) / decay_s)
            left = q_new
            deepest = math.nan
            taken_qty = 0.0
            n_occupied = 0
            for j in range(levels):
                if left <= 0:
                    break
                qj = opp_q[b, j] if b >= 0 else 0.0
                if qj <= 0.0:
                    break
                pj = opp_px[b, j] + shift
                if (s == 1 and pj > limit) or (s == -1 and pj < limit):
                    deepest = math.nan
                    n_occupied = -1
                    break
                take = min(left, int(qj))
                left -= take
                deepest = opp_px[b, j]
                taken_qty += qj
                n_occupied += 1
                f_qty[i] += take
                f_notional[i] += take * pj
                fee = take * taker_fee
                f_fees[i] += fee
                f_nfills[i] += 1
                iv_num[i] += take * pj
                iv_den[i] += take
                if record:
                    ev_env[n_rows] = i
                    ev_child[n_rows] = o_child[i]
                    ev_t[n_rows] = ta - t0[i]
                    ev_qty[n_rows] = take
                    ev_px[n_rows] = pj
                    ev_passive[n_rows] = False
                    ev_fee[n_rows] = fee
                    n_rows += 1
            if left > 0 and n_occupied >= 0:
                # beyond the recorded depth: flat levels a tick apart, each of the visible
                # levels' mean size, up to the limit (and above zero): one fill row
                if n_occupied > 0:
                    per_level = max(int(taken_qty / n_occupied), 1)
                    base = deepest + shift
                else:  # the side is empty: from a tick beyond the last mid
                    per_level = 100
                    base = arrival_units[i] + shift
                    if b >= 0 and bid_qty[b, 0] > 0 and ask_qty[b, 0] > 0:
                        base = 0.5 * (bid_px[b, 0] + ask_px[b, 0]) + shift
                room = (limit - base) / tick if s == 1 else (base - limit) / tick
                if s == -1:
                    room = min(room, (base - tick) / tick)  # prices stay >= one tick
                n_lv = math.floor(room + 1e-9) if room < 1e15 else left // per_level + 1
                if n_lv > 0:
                    can = min(left, n_lv * per_level)
                    full = can // per_level
                    rem = can - full * per_level
                    cost = per_level * (full * base + s * tick * full * (full + 1) / 2.0)
                    cost += rem * (base + s * (full + 1) * tick)
                    left -= can
                    f_qty[i] += can
                    f_notional[i] += cost
                    fee = can * taker_fee
                    f_fees[i] += fee
                    f_nfills[i] += 1
                    iv_num[i] += cost
                    iv_den[i] += can
                    if record:
                        ev_env[n_rows] = i
                        ev_child[n_rows] = o_child[i]
                        ev_t[n_rows] = ta - t0[i]
                        ev_qty[n_rows] = can
                        ev_px[n_rows] = cost / can
                        ev_passive[n_rows] = False
                        ev_fee[n_rows] = fee
                        n_rows += 1
            took_now = q_new - left
            if kappa > 0.0 and took_now > 0:
                imp[i] = shift + s * kappa * took_now
                imp_t[i] = ta
            if left > 0 and rests:
                own_px = bid_px if s == 1 else ask_px
                own_q = bid_qty if s == 1 else ask_qty
                level = 0.0
                if b >= 0:
                    for j in range(levels):
                        if own_q[b, j] > 0 and own_px[b, j] == limit:
                            level = own_q[b, j]
                            break
                w_qty[i] = left
                w_px[i] = limit
                w_ahead[i] = level
                w_level[i] = level
                w_pending[i] = 0.0
                # events numbered from here on came after we joined
                w_join[i] = seq[ptr[i]] if ptr[i] < n_ev_total else seq[n_ev_total - 1] + 1
                w_expire[i] = k[i] + o_ttl[i]
                w_child[i] = o_child[i]
        last_vol[i] = vol
        if w_qty[i] > 0 and k[i] + 1 >= w_expire[i]:
            f_cancelled[i] += w_qty[i]
            w_qty[i] = 0
        k[i] += 1
    return n_rows


class ReplayMarket:
    """``n_envs`` episodes of one recording replayed together (module docstring)."""

    def __init__(self, config: ReplayMarketConfig, n_envs: int, side: int):
        if side not in (1, -1):
            raise ValueError(f"side = {side!r} must be +1 (buy) or -1 (sell)")
        if n_envs < 1:
            raise ValueError(f"n_envs = {n_envs!r} must be >= 1")
        from execrl.market.features import FeatureBuilder, FeatureConfig

        self.config = config
        self.data = d = config.replay_data
        self.n_envs = n_envs
        self.n_steps = config.n_steps
        self.side = side
        self.tick_size = d.tick_size
        #: order types this market fills (every one: ``ORDER_TYPE_CODES``)
        self.order_types = frozenset(ORDER_TYPE_CODES.values())
        self._dt = config.tau
        self._scale = d.price_scale
        self._queue_rule = QUEUE_MODELS.index(config.queue)
        self._kappa_units = config.kappa * d.price_scale  # price units per share
        self._start_lo, last = config.start_range()
        self._start_span = last - self._start_lo
        self._top_k = min(5, d.levels)
        self._features = FeatureBuilder(
            n_envs, FeatureConfig(windows_s=(10.0, 30.0), top_k=self._top_k,
                                  max_trade_capacity=1 << 20))
        self._names = self._features.names
        self.available_features: tuple[str, ...] = (
            "price_drift", "volatility", "spread_bps", "last_volume", "expected_volume",
            "tick_flow_10s", "tick_flow_30s", "imbalance_1", f"imbalance_{self._top_k}",
            "realised_vol_bps", "queue_ahead", "best_bid", "best_ask",
        ) if self._top_k > 1 else (
            "price_drift", "volatility", "spread_bps", "last_volume", "expected_volume",
            "tick_flow_10s", "tick_flow_30s", "imbalance_1", "realised_vol_bps", "queue_ahead",
            "best_bid", "best_ask")
        n = n_envs
        self._keys = np.zeros(n, dtype=np.uint64)
        self._t0 = np.zeros(n)
        self._k = np.zeros(n, dtype=np.int64)
        self._ptr = np.zeros(n, dtype=np.int64)
        self._fed = np.zeros(n, dtype=np.int64)  # events fed to the feature builder
        self._arrival_units = np.zeros(n)
        self._arrival = np.zeros(n)
        self.arrival_vwap = np.zeros(n)
        self._w_qty = np.zeros(n, dtype=np.int64)
        self._w_px = np.zeros(n)
        self._w_ahead = np.zeros(n)
        self._w_join = np.zeros(n, dtype=np.int64)
        self._w_level = np.zeros(n)
        self._w_pending = np.zeros(n)
        self._w_expire = np.zeros(n, dtype=np.int64)
        self._w_child = np.zeros(n, dtype=np.int64)
        self._imp = np.zeros(n)
        self._imp_t = np.zeros(n)
        self._iv_num = np.zeros(n)
        self._iv_den = np.zeros(n)
        self._last_vol = np.zeros(n)
        self._rows = np.arange(n)
        self._obs_cache: dict[str, NDArray[np.float64]] | None = None
        #: feed the feature builder after each step (off: benchmarks, or runs that observe
        #: none of the builder's features; ``feature`` then reads stale values)
        self.feed_features = True
        self._stats = config.stats
        self._sigma_horizon = self._stats.sigma_per_sqrt_s * math.sqrt(config.horizon)

    # -- protocol -------------------------------------------------------------------------
    @property
    def mid(self) -> NDArray[np.float64]:
        """The recorded mid now (the last event at or before the step's end), plus our own
        transient impact."""
        mid = self._mid_units_now()
        now = self._t0 + self._k * self._dt
        if self._kappa_units > 0:
            mid = mid + self._imp * np.exp(-(now - self._imp_t) / self.config.impact_decay_s)
        return mid / self._scale

    @property
    def arrival_mid(self) -> NDArray[np.float64]:
        return self._arrival

    @property
    def interval_vwap(self) -> NDArray[np.float64]:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self._iv_den > 0, self._iv_num / self._iv_den / self._scale,
                            self.mid)

    @property
    def episode_start(self) -> NDArray[np.float64]:
        """Each episode's start on the data's clock (seconds)."""
        return self._t0.copy()

    @property
    def touch(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Each episode's recorded best bid and best ask now (currency; NaN where a side is
        empty)."""
        bid_px, bid_qty, ask_px, ask_qty = self._touch_now()
        bid = np.where(bid_qty > 0, bid_px / self._scale, np.nan)
        ask = np.where(ask_qty > 0, ask_px / self._scale, np.nan)
        return bid, ask

    # -- where the recorded market comes from (the paper market, execrl.service.paper, reads
    # -- it from the market-data stream instead and keeps everything else) ------------------
    def _mid_units_now(self) -> NDArray[np.float64]:
        """The recorded mid of each episode now (price units): its last event's."""
        return self.data.mid_units[np.maximum(self._ptr - 1, 0)]

    def _touch_now(self) -> tuple[NDArray, NDArray, NDArray, NDArray]:
        """Each episode's recorded best bid, its size, best ask, its size now (price units)."""
        d = self.data
        b = np.maximum(self._ptr - 1, 0)
        return d.bid_px[b, 0], d.bid_qty[b, 0], d.ask_px[b, 0], d.ask_qty[b, 0]

    def _events(self) -> tuple[NDArray, ...]:
        """The event columns the step kernel walks (``_step``'s first eleven arguments)."""
        d = self.data
        return (d.t, d.kind, d.size, d.price, d.side, d.sub_row, d.seq, d.bid_px, d.bid_qty,
                d.ask_px, d.ask_qty)

    def _begin_step(self, active: NDArray[np.bool_]) -> None:
        """Before the kernel: the recording is all there (the paper market builds the step's
        rows here)."""

    def _end_step(self, active: NDArray[np.bool_]) -> None:
        """After the kernel (the paper market keeps the book the step ended on)."""

    def _event_capacity(self, active: NDArray[np.bool_]) -> int:
        """Fill rows the step can write at most: one per event ahead, and the walks."""
        d = self.data
        ends = self._t0 + (self._k + 1) * self._dt
        ahead = np.searchsorted(d.t, ends, side="right") - self._ptr
        return int(np.where(active, ahead, 0).sum()) + self.n_envs * (d.levels + 2) + 16

    @property
    def working_qty(self) -> NDArray[np.int64]:
        return self._w_qty.copy()

    @property
    def queue_ahead(self) -> NDArray[np.float64]:
        """Shares ahead of each episode's working order (NaN where none works)."""
        return np.where(self._w_qty > 0, self._w_ahead, np.nan)

    def reset(self, rng: np.random.Generator, env_ids: NDArray[np.intp] | None = None) -> None:
        ids = self._rows if env_ids is None else np.asarray(env_ids, dtype=np.intp)
        m = ids.size
        if m == 0:
            return
        d = self.data
        keys = episode_keys(rng, m)
        starts = np.empty(m)
        _draw_starts(keys, self._start_lo, self._start_span, d.halts, self.config.horizon,
                     starts)
        self._keys[ids] = keys
        ptr = np.searchsorted(d.t, starts, side="right")
        self._ptr[ids] = ptr
        self._arrival_units[ids] = d.mid_units[np.maximum(ptr - 1, 0)]
        self._arrival[ids] = self._arrival_units[ids] / self._scale
        lo = np.searchsorted(d.t, starts - self.config.pre_arrival_s, side="left")
        vol = d.cum_volume[ptr] - d.cum_volume[lo]
        with np.errstate(invalid="ignore", divide="ignore"):
            vwap = (d.cum_notional[ptr] - d.cum_notional[lo]) / vol / self._scale
        self.arrival_vwap[ids] = np.where(vol > 0, vwap, self._arrival[ids])
        self._start_orders(ids, starts, fed=lo)

    def _start_orders(self, ids: NDArray[np.intp], starts: NDArray[np.float64],
                      fed: NDArray[np.int64] | None = None) -> None:
        """New orders in ``ids`` starting at ``starts`` (arrival prices set): no working order,
        no impact, and the features a fresh stream from the pre-arrival window up to the first
        observation (``fed``: where the data's events to feed start, when they come from the
        store). The backtest's reset and the stream's paper market both end here."""
        self._t0[ids] = starts
        self._k[ids] = 0
        for arr in (self._w_qty, self._w_ahead, self._w_level, self._w_pending, self._imp,
                    self._iv_num, self._iv_den, self._last_vol):
            arr[ids] = 0
        self._imp_t[ids] = starts
        self._w_expire[ids] = 0
        fb = self._features
        fb.reset(ids, t0=starts - self.config.pre_arrival_s)
        if fed is not None:
            self._fed[ids] = fed
        self._feed(ids)
        fb.start_order(ids, self._arrival[ids], self.side)
        self._obs_cache = None

    def execute(
        self, orders: ChildOrderBatch, active: NDArray[np.bool_], record_events: bool = False
    ) -> FillBatch:
        n = self.n_envs
        qty = np.ascontiguousarray(orders.qty, dtype=np.int64)
        otype = np.ascontiguousarray(orders.order_type, dtype=np.int8)
        act = np.ascontiguousarray(active, dtype=np.bool_)
        reject, px_units = self._check_prices(qty, otype, orders.limit_px, act)
        f_qty = np.empty(n, dtype=np.int64)
        f_notional = np.empty(n)
        f_passive = np.empty(n, dtype=np.int64)
        f_fees = np.empty(n)
        f_nfills = np.empty(n, dtype=np.int32)
        f_cancelled = np.empty(n, dtype=np.int64)
        self._begin_step(act)
        cap = self._event_capacity(act) if record_events else 1
        ev = np.empty(cap, dtype=FILL_DTYPE)
        ev_env = np.empty(cap, dtype=np.int32)
        ev_child = np.empty(cap, dtype=np.int64)
        ev_t = np.empty(cap)
        ev_qty = np.empty(cap, dtype=np.int64)
        ev_px = np.empty(cap)
        ev_passive = np.empty(cap, dtype=np.bool_)
        ev_fee = np.empty(cap)
        rows = _step(*self._step_args(
            act, qty, otype, px_units, orders, reject, f_qty, f_notional, f_passive, f_fees,
            f_nfills, f_cancelled, record_events, ev_env, ev_child, ev_t, ev_qty, ev_px,
            ev_passive, ev_fee))
        self._end_step(act)
        with np.errstate(invalid="ignore", divide="ignore"):
            avg_px = np.where(f_qty > 0, f_notional / f_qty / self._scale, np.nan)
        fills = FillBatch(qty=f_qty, avg_px=avg_px, passive_qty=f_passive, fees=f_fees,
                          n_fills=f_nfills, working_qty=self._w_qty.copy(),
                          cancelled_qty=f_cancelled, reject=reject)
        if record_events:
            ev = ev[:rows]
            ev["env"] = ev_env[:rows]
            ev["child_id"] = ev_child[:rows]
            ev["t"] = ev_t[:rows]
            ev["qty"] = ev_qty[:rows]
            ev["px"] = ev_px[:rows] / self._scale
            ev["passive"] = ev_passive[:rows]
            ev["fee"] = ev_fee[:rows]
            fills.events = ev
        if self.feed_features:
            self._feed(np.flatnonzero(act))
        self._obs_cache = None
        return fills

    def _step_args(self, act, qty, otype, px_units, orders, reject, *outputs):  # type: ignore[no-untyped-def]
        """The kernel's arguments, in its order (the benchmark runs the same kernel
        interpreted, ``_step.py_func``, on them)."""
        d, c = self.data, self.config
        return (
            *self._events(), act, self._keys, self._t0, self._k, self._ptr, self._dt,
            c.order_latency_s, c.latency_jitter_s, self.side, self._queue_rule,
            c.queue_power, c.taker_fee_per_share, c.maker_fee_per_share, d.tick,
            self._kappa_units, c.impact_decay_s, self._arrival_units,
            self._w_qty, self._w_px, self._w_ahead, self._w_join, self._w_level,
            self._w_pending, self._w_expire, self._w_child, self._imp, self._imp_t,
            self._iv_num, self._iv_den, self._last_vol,
            qty, otype, px_units, np.ascontiguousarray(orders.ttl_steps, dtype=np.int64),
            np.ascontiguousarray(orders.cancel, dtype=np.bool_),
            np.ascontiguousarray(orders.child_id, dtype=np.int64), reject, *outputs,
        )

    def _check_prices(self, qty, otype, limit_px, active):  # type: ignore[no-untyped-def]
        """Per order: the reject code of a limit price that is missing or off the tick grid,
        and the limit in price units (NaN for market orders)."""
        n = self.n_envs
        reject = np.zeros(n, dtype=np.int8)
        px = np.asarray(limit_px, dtype=np.float64) * self._scale
        priced = otype != _MARKET
        sending = active & (qty > 0)
        missing = sending & priced & ~np.isfinite(px)
        reject[missing] = REJECT_NO_PRICE
        with np.errstate(invalid="ignore"):
            ticks = px / self.data.tick
            off = sending & priced & np.isfinite(px) & (np.abs(ticks - np.round(ticks)) > 1e-6)
        reject[off] = REJECT_OFF_TICK
        units = np.where(priced & np.isfinite(px), np.round(ticks) * self.data.tick, np.nan)
        return reject, np.ascontiguousarray(units)

    def _feed(self, ids: NDArray[np.intp]) -> None:
        """Feed the feature builder every event of ``ids`` stamped at or before its next
        observation time (the step's end less the market-data delay): the trades and the book
        rows of the interval in one call (``FeatureBuilder.on_market_events``)."""
        if ids.size == 0:
            return
        d = self.data
        now = self._t0[ids] + self._k[ids] * self._dt - self.config.market_data_delay_s
        lo = self._fed[ids]
        hi = np.maximum(np.searchsorted(d.t, now, side="right"), lo)
        self._fed[ids] = hi
        self._feed_rows(ids, lo, hi, d.t, d.kind, d.price, d.size, d.side, d.bid_px, d.bid_qty,
                        d.ask_px, d.ask_qty)

    def _feed_rows(self, ids, lo, hi, t, kind, price, size, side, bid_px, bid_qty, ask_px,  # type: ignore[no-untyped-def]
                   ask_qty) -> None:
        """Feed episode ``ids[j]`` the event rows [lo[j], hi[j]) of these columns: the trades
        and book rows in one ``FeatureBuilder.on_market_events`` call, then the queue."""
        d = self.data
        fb = self._features
        total = int((hi - lo).sum())
        if total > 0:
            k = self._top_k
            proxy = not np.isnan(d.proxy_half_spread)
            trades = np.empty(total, dtype=TRADE_DTYPE)
            bt = np.empty(total)
            benv = np.empty(total, dtype=np.int64)
            bbp = np.empty((total, k))
            bbq = np.empty((total, k))
            bap = np.empty((total, k))
            baq = np.empty((total, k))
            n_tr, n_bk = _gather(ids, lo, hi, t, kind, price, size, side, bid_px,
                                 bid_qty, ask_px, ask_qty, 1.0 / self._scale, proxy,
                                 trades["env"], trades["t"], trades["px"], trades["qty"],
                                 trades["aggressor"], bt, benv, bbp, bbq, bap, baq)
            fb.on_market_events(trades[:n_tr], bt[:n_bk], bbp[:n_bk], bbq[:n_bk], bap[:n_bk],
                                baq[:n_bk], env_ids=benv[:n_bk])
        fb.set_queue_position(self.queue_ahead[ids], ids)

    def _observed(self) -> dict[str, NDArray[np.float64]]:
        """The builder's features of every episode at its observation time."""
        if self._obs_cache is None:
            names = [n for n in self._names if n in self.available_features
                     or n == "realised_vol_bps"]
            fb = self._features
            now = self._t0 + self._k * self._dt - self.config.market_data_delay_s
            values = fb.values(names, t=np.maximum(now, fb.clock))
            self._obs_cache = {name: values[:, j] for j, name in enumerate(names)}
        return self._obs_cache

    def expected_mid_change(
        self, shares: NDArray[np.int64], orders: ChildOrderBatch | None = None
    ) -> NDArray[np.float64]:
        """Our own impact's part of the coming step's mid change (the recording's own move
        is not predictable): with impact off, zero."""
        if self._kappa_units <= 0:
            return np.zeros(self.n_envs)
        c = self.config
        now = self._t0 + self._k * self._dt
        lat = np.full(self.n_envs, c.order_latency_s)
        if c.latency_jitter_s > 0:
            lat = lat + c.latency_jitter_s * _exponentials(self._keys, self._k)
        ta = np.minimum(now + lat, now + self._dt)
        end = now + self._dt
        decay = c.impact_decay_s
        before = self._imp * np.exp(-(now - self._imp_t) / decay)
        at = self._imp * np.exp(-(ta - self._imp_t) / decay)
        taken = np.asarray(shares, dtype=np.float64)
        after = np.where(taken > 0, (at + self.side * self._kappa_units * taken)
                         * np.exp(-(end - ta) / decay),
                         self._imp * np.exp(-(end - self._imp_t) / decay))
        return (after - before) / self._scale

    def feature(self, name: str) -> NDArray[np.float64]:
        if name == "price_drift":
            return (self.mid - self._arrival) / (self._sigma_horizon or 1.0)
        if name == "last_volume":
            return self._last_vol.copy()
        if name == "expected_volume":
            return np.full(self.n_envs, self._stats.volume_per_s * self._dt)
        if name == "queue_ahead":
            return np.nan_to_num(self.queue_ahead, nan=0.0)
        if name in ("best_bid", "best_ask"):  # the recorded touch the agent's limits price from
            return self.touch[0 if name == "best_bid" else 1]
        if name not in self.available_features:
            raise KeyError(f"feature {name!r} is not provided by the replay market; "
                           f"available: {', '.join(self.available_features)}")
        obs = self._observed()
        if name == "volatility":  # realised vol now / the day's, 1 = an average moment
            rv = obs["realised_vol_bps"] / 1e4 * self._arrival
            return np.nan_to_num(rv / max(self._stats.sigma_per_sqrt_s, 1e-12), nan=1.0)
        values = obs[name]
        return np.nan_to_num(values, nan=0.0)


@njit(cache=True)
def _gather(ids, lo, hi, t, kind, price, size, side, bid_px, bid_qty, ask_px, ask_qty,  # type: ignore[no-untyped-def]
            inv_scale, proxy, tr_env, tr_t, tr_px, tr_qty, tr_aggr, bk_t, bk_env, bk_bid_px,
            bk_bid_qty, bk_ask_px, bk_ask_qty):
    """The trades and the book rows (top k) of events [lo, hi) of each episode in ``ids``,
    in the feature builder's units: (trades, book rows) written."""
    n_tr = 0
    n_bk = 0
    k = bk_bid_px.shape[1]
    for j in range(ids.shape[0]):
        e = ids[j]
        for r in range(lo[j], hi[j]):
            kr = kind[r]
            if kr == 4 or kr == 5 or kr == 8:
                tr_env[n_tr] = e
                tr_t[n_tr] = t[r]
                tr_px[n_tr] = price[r] * inv_scale
                tr_qty[n_tr] = size[r]
                tr_aggr[n_tr] = -side[r]
                n_tr += 1
            book = (kr == 8) if proxy else (kr != 5 and kr != 6 and kr != 7 and kr != 8)
            if book:
                bk_t[n_bk] = t[r]
                bk_env[n_bk] = e
                for c in range(k):
                    bk_bid_px[n_bk, c] = bid_px[r, c] * inv_scale
                    bk_bid_qty[n_bk, c] = bid_qty[r, c]
                    bk_ask_px[n_bk, c] = ask_px[r, c] * inv_scale
                    bk_ask_qty[n_bk, c] = ask_qty[r, c]
                n_bk += 1
    return n_tr, n_bk


@njit(cache=True)
def _exponentials(keys, k):  # type: ignore[no-untyped-def]
    out = np.empty(keys.shape[0])
    for i in range(keys.shape[0]):
        out[i] = exponential(keys[i], _STREAM_LATENCY, k[i])
    return out
