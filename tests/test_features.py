"""Tests for execrl.market.features: every feature against a direct computation, no look-ahead,
resets, refusals, the online normaliser and the feature schema.

The direct computation (``Direct``) keeps every event in plain Python lists and recomputes each
feature from its definition with a plain loop at query time, over the events with time <= t:
no rings, no running sums, no recursion. Streams put times on a 0.5 s grid so that ties between
events and trades exactly on a window's edge (t - W) occur often.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from execrl.domain import ConfigError, Side
from execrl.market.events import CHILD_ORDER_DTYPE, FILL_DTYPE, TRADE_DTYPE
from execrl.market.features import (
    FEATURES,
    FeatureBuilder,
    FeatureConfig,
    FeatureSchema,
    OnlineNormaliser,
    describe_features,
)

# -- the direct computation ---------------------------------------------------------------------


@dataclass
class OrderLog:
    """One parent order of one environment: what arrived with it and what it did."""

    arrival_t: float
    arrival_mid: float
    side: int
    children: list[tuple[float, int, int]] = field(default_factory=list)  # t, id, qty
    fills: list[tuple[float, int, int, float]] = field(default_factory=list)  # t, id, qty, px
    queue: list[tuple[float, float]] = field(default_factory=list)  # t, ahead


@dataclass
class MarketLog:
    """One market stream of one environment, from a reset on: every event, in feeding order."""

    t0: float
    trades: list[tuple[float, float, int, int]] = field(default_factory=list)  # t, px, qty, aggr
    books: list[tuple[float, list, list, list, list]] = field(default_factory=list)
    orders: list[OrderLog] = field(default_factory=list)


class Direct:
    """The whole history, never forgotten: a value at t reads the stream and the order that
    were current at t, and the events of them with time <= t."""

    def __init__(self, n_envs: int, config: FeatureConfig) -> None:
        self.c = config
        self.markets: list[list[MarketLog]] = [[MarketLog(-math.inf)] for _ in range(n_envs)]
        self.clock = [-math.inf] * n_envs

    def _now(self, e: int) -> MarketLog:
        return self.markets[e][-1]

    def reset(self, env_ids: list[int], t0: float) -> None:
        for e in env_ids:
            self.markets[e].append(MarketLog(t0))
            self.clock[e] = t0

    def start_order(self, env_ids: list[int], arrival_mid: list[float], side: list[int]) -> None:
        for e, m, s in zip(env_ids, arrival_mid, side, strict=True):
            self._now(e).orders.append(OrderLog(self.clock[e], m, s))

    def trade(self, e: int, t: float, px: float, qty: int, aggr: int) -> None:
        self._now(e).trades.append((t, px, qty, aggr))
        self.clock[e] = t

    def book(self, e: int, t: float, bp: list, bq: list, ap: list, aq: list) -> None:
        k = self.c.top_k
        self._now(e).books.append((t, bp[:k], bq[:k], ap[:k], aq[:k]))
        self.clock[e] = t

    def child(self, e: int, t: float, cid: int, qty: int) -> None:
        self._now(e).orders[-1].children.append((t, cid, qty))
        self.clock[e] = t

    def fill(self, e: int, t: float, cid: int, qty: int, px: float) -> None:
        self._now(e).orders[-1].fills.append((t, cid, qty, px))
        self.clock[e] = t

    def queue(self, e: int, ahead: float) -> None:
        self._now(e).orders[-1].queue.append((self.clock[e], ahead))

    def has_order(self, e: int) -> bool:
        return bool(self._now(e).orders)

    # -- definitions ----------------------------------------------------------------------
    @staticmethod
    def _best(px: list, qty: list) -> tuple[float, float]:
        for p, q in zip(px, qty, strict=True):
            if q > 0:
                return p, q
        return math.nan, 0.0

    def _mid_of(self, snap: tuple) -> float:
        _, bp, bq, ap, aq = snap
        return 0.5 * (self._best(bp, bq)[0] + self._best(ap, aq)[0])

    def value(self, e: int, name: str, t: float) -> float:
        market = [m for m in self.markets[e] if m.t0 <= t][-1]
        orders = [o for o in market.orders if o.arrival_t <= t]
        log = orders[-1] if orders else OrderLog(math.nan, math.nan, 0)
        trades = [x for x in market.trades if x[0] <= t]
        books = [x for x in market.books if x[0] <= t]
        snap = books[-1] if books else None
        mid = self._mid_of(snap) if snap else math.nan
        k = self.c.top_k
        for w in self.c.windows_s:
            s = f"{w:g}s"
            inside = [x for x in trades if x[0] > t - w]
            if name == f"tick_flow_{s}":
                return float(sum(q * a for _, _, q, a in inside))
            if name == f"volume_{s}":
                return float(sum(q for _, _, q, _ in inside))
            if name == f"trades_{s}":
                return float(len(inside))
        if name == "mid":
            return mid
        if name == "spread_bps":
            if snap is None:
                return math.nan
            return (self._best(snap[3], snap[4])[0] - self._best(snap[1], snap[2])[0]) / mid * 1e4
        if name.startswith("imbalance_"):
            if snap is None:
                return math.nan
            levels = int(name.split("_")[1])
            if levels == 1:
                b, a = self._best(snap[1], snap[2])[1], self._best(snap[3], snap[4])[1]
            else:
                b, a = sum(snap[2][:levels]), sum(snap[4][:levels])
            return (b - a) / (b + a) if b + a > 0 else math.nan
        if name == f"bid_depth_{k}":
            return float(sum(snap[2])) if snap else 0.0
        if name == f"ask_depth_{k}":
            return float(sum(snap[4])) if snap else 0.0
        for side, px_i, qty_i in (("bid", 1, 2), ("ask", 3, 4)):
            if name.startswith(f"{side}_qty_"):
                i = int(name.rsplit("_", 1)[1]) - 1
                return float(snap[qty_i][i]) if snap else 0.0
            if name.startswith(f"{side}_dist_bps_"):
                i = int(name.rsplit("_", 1)[1]) - 1
                if snap is None or snap[qty_i][i] <= 0:
                    return math.nan
                p = snap[px_i][i]
                return ((mid - p) if side == "bid" else (p - mid)) / mid * 1e4
        if name == "time_since_trade_s":
            return t - trades[-1][0] if trades else math.nan
        if name == "realised_vol_bps":
            lam = math.log(2.0) / self.c.vol_halflife_s
            total, last, n = 0.0, math.nan, 0
            for b in books:
                m = self._mid_of(b)
                if math.isnan(m):
                    continue
                if not math.isnan(last):
                    total += math.log(m / last) ** 2 * math.exp(-lam * (t - b[0]))
                    n += 1
                last = m
            return math.sqrt(lam * total) * 1e4 if n else math.nan
        if name in ("arrival_vwap", "mid_vs_arrival_vwap_bps"):
            ta, w = log.arrival_t, self.c.arrival_vwap_window_s
            before = [x for x in trades if x[0] <= ta and (w is None or x[0] > ta - w)]
            vol = sum(q for _, _, q, _ in before)
            notional = 0.0
            for _, px, q, _ in before:
                notional += px * q
            vwap = notional / vol if vol else math.nan
            if name == "arrival_vwap":
                return vwap
            return log.side * (mid - vwap) / vwap * 1e4 if log.side else math.nan
        if name == "mid_vs_arrival_bps":
            if not log.side:
                return math.nan
            return log.side * (mid - log.arrival_mid) / log.arrival_mid * 1e4
        if name == "queue_ahead":
            queue = [q for q in log.queue if q[0] <= t]
            return queue[-1][1] if queue else math.nan
        if name == "recent_fill_rate":
            last_children = [c for c in log.children if c[0] <= t][-self.c.order_memory :]
            sent = sum(q for _, _, q in last_children)
            filled = sum(
                fq for _, cid, _ in last_children for ft, fid, fq, _ in log.fills
                if fid == cid and ft <= t
            )
            return filled / sent if sent else math.nan
        if name == "avg_slippage_bps":
            last_fills = [f for f in log.fills if f[0] <= t][-self.c.fill_memory :]
            num, den = 0.0, 0
            for _, _, q, px in last_fills:
                num += q * (log.side * (px - log.arrival_mid) / log.arrival_mid * 1e4)
                den += q
            return num / den if den else math.nan
        raise AssertionError(f"no direct computation for {name}")

    def values(self, names: tuple[str, ...], t: float) -> np.ndarray:
        return np.array([[self.value(e, nm, t) for nm in names] for e in range(len(self.markets))])


# -- random event streams -----------------------------------------------------------------------
TICK = 0.01


class Stream:
    """Feeds the same random events to a builder and to the direct computation."""

    def __init__(self, n_envs: int, config: FeatureConfig, seed: int) -> None:
        self.n = n_envs
        self.c = config
        self.rng = np.random.default_rng(seed)
        self.fb = FeatureBuilder(n_envs, config)
        self.ref = Direct(n_envs, config)
        self.mid_ticks = self.rng.integers(9_000, 11_000, n_envs).astype(float)
        self.next_child = np.zeros(n_envs, dtype=np.int64)
        self.t = 0.0
        self.fb.reset(t0=0.0)
        self.ref.reset(list(range(n_envs)), 0.0)

    def book_rows(self, envs: np.ndarray) -> tuple[np.ndarray, ...]:
        rng, k = self.rng, self.c.top_k + 2  # two levels more than read: ignored
        self.mid_ticks[envs] += rng.integers(-2, 3, envs.size)
        half = rng.integers(1, 4, envs.size)
        gaps = np.cumsum(rng.integers(1, 3, (envs.size, k)), axis=1) - 1
        bid_px = (self.mid_ticks[envs, None] - half[:, None] - gaps) * TICK
        ask_px = (self.mid_ticks[envs, None] + half[:, None] + gaps) * TICK
        bid_qty = rng.integers(1, 500, (envs.size, k)) * (rng.random((envs.size, k)) > 0.2)
        ask_qty = rng.integers(1, 500, (envs.size, k)) * (rng.random((envs.size, k)) > 0.2)
        bid_qty[rng.random(envs.size) < 0.05] = 0  # a side empty now and then
        bid_px = np.where((bid_qty == 0) & (rng.random(bid_px.shape) < 0.5), np.nan, bid_px)
        return bid_px, bid_qty.astype(float), ask_px, ask_qty.astype(float)

    def step(self) -> float:
        """Events of one 0.5-2 s chunk for every env, fed as one batch per kind; returns the
        chunk's end time (the next query time)."""
        rng, n = self.rng, self.n
        start = self.t
        end = start + 0.5 * rng.integers(1, 5)
        # trades at grid times in (start, end], rows in global time order, envs interleaved
        counts = rng.poisson(3.0, n)
        env = np.repeat(np.arange(n, dtype=np.int32), counts)
        times = start + 0.5 * rng.integers(1, round((end - start) / 0.5) + 1, env.size)
        order = np.lexsort((rng.random(env.size), times))
        trades = np.zeros(env.size, dtype=TRADE_DTYPE)
        trades["env"], trades["t"] = env[order], times[order]
        trades["px"] = (self.mid_ticks[trades["env"]] + rng.integers(-3, 4, env.size)) * TICK
        trades["qty"] = rng.integers(1, 300, env.size)
        trades["aggressor"] = rng.choice(np.array([-1, 1], dtype=np.int8), env.size)
        self.fb.on_trades(trades)
        for row in trades:
            self.ref.trade(int(row["env"]), float(row["t"]), float(row["px"]), int(row["qty"]),
                           int(row["aggressor"]))
        # a book snapshot for a random subset at the chunk end
        envs = np.flatnonzero(rng.random(n) < 0.7)
        if envs.size:
            bp, bq, ap, aq = self.book_rows(envs)
            self.fb.on_book(end, bp, bq, ap, aq, env_ids=envs)
            for i, e in enumerate(envs):
                self.ref.book(int(e), end, list(bp[i]), list(bq[i]), list(ap[i]), list(aq[i]))
        # own orders: child orders and fills of the envs with a parent order
        working = np.flatnonzero([self.ref.has_order(e) for e in range(n)])
        if working.size:
            sent = working[rng.random(working.size) < 0.5]
            orders = np.zeros(sent.size, dtype=CHILD_ORDER_DTYPE)
            orders["env"], orders["t"] = sent, end
            orders["child_id"] = self.next_child[sent]
            orders["qty"] = rng.integers(1, 400, sent.size)
            self.next_child[sent] += 1
            self.fb.on_child_orders(orders)
            for row in orders:
                self.ref.child(int(row["env"]), end, int(row["child_id"]), int(row["qty"]))
            nf = rng.poisson(1.5, working.size)
            fe = np.repeat(working, nf)
            fills = np.zeros(fe.size, dtype=FILL_DTYPE)
            fills["env"], fills["t"] = fe, end
            # a recent child, an old one (forgotten by the rate) or one never sent
            back = rng.integers(1, self.c.order_memory + 3, fe.size)
            fills["child_id"] = self.next_child[fe] - back
            fills["qty"] = rng.integers(1, 200, fe.size)
            fills["px"] = (self.mid_ticks[fe] + rng.integers(-5, 6, fe.size)) * TICK
            fills["passive"] = rng.random(fe.size) < 0.5
            fills["fee"] = rng.normal(0, 0.1, fe.size)
            self.fb.on_fills(fills)
            for row in fills:
                self.ref.fill(int(row["env"]), end, int(row["child_id"]), int(row["qty"]),
                              float(row["px"]))
            qenv = working[rng.random(working.size) < 0.5]
            ahead = np.where(rng.random(qenv.size) < 0.2, np.nan,
                             rng.integers(0, 1000, qenv.size).astype(float))
            self.fb.set_queue_position(ahead, env_ids=qenv)
            for e, a in zip(qenv, ahead, strict=True):
                self.ref.queue(int(e), float(a))
        # now and then a parent order arrives, or a subset of envs restarts
        arrive = np.flatnonzero(rng.random(n) < 0.15)
        if arrive.size:
            mids = (self.mid_ticks[arrive] + rng.integers(-2, 3, arrive.size)) * TICK
            sides = rng.choice(np.array([-1, 1]), arrive.size)
            self.fb.start_order(arrive, mids, sides)
            self.ref.start_order(list(arrive), list(mids), list(sides))
        restart = np.flatnonzero(rng.random(n) < 0.03)
        if restart.size:
            self.fb.reset(restart, t0=end)
            self.ref.reset(list(restart), end)
        self.t = end
        return end

    def query(self, t: float) -> np.ndarray:
        """The builder's values at t (its clocks move to t, and the direct one's with them)."""
        got = self.fb.values(self.fb.names, t)
        self.t = t
        self.ref.clock = [max(c, t) for c in self.ref.clock]
        return got


CONFIGS = [
    FeatureConfig(),
    FeatureConfig(windows_s=(2.5, 10.0, 1.0), top_k=1, vol_halflife_s=3.0, fill_memory=2,
                  order_memory=3, trade_capacity=1),
    FeatureConfig(windows_s=(5.0,), top_k=3, arrival_vwap_window_s=4.0, fill_memory=1,
                  order_memory=1, trade_capacity=2),
]


def assert_same(got: np.ndarray, want: np.ndarray, names: tuple[str, ...]) -> None:
    # the builder's sums run in another order (or recursively, for the volatility), so equal
    # up to float rounding; counts and share sums are integers and match exactly
    for j, name in enumerate(names):
        np.testing.assert_allclose(got[:, j], want[:, j], rtol=1e-10, atol=1e-12,
                                   equal_nan=True, err_msg=name)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("config", CONFIGS, ids=["default", "short_k1", "arrival_window"])
def test_every_feature_matches_the_direct_computation(config: FeatureConfig, seed: int) -> None:
    stream = Stream(5, config, seed)
    names = stream.fb.names
    checked = 0
    for _ in range(60):
        end = stream.step()
        # sometimes query between events, sometimes exactly at the last event's time
        t = end + (0.25 if stream.rng.random() < 0.5 else 0.0)
        got = stream.query(t)
        assert_same(got, stream.ref.values(names, t), names)
        checked += int(np.isfinite(got).sum())
    assert checked > 0


def test_streams_exercise_every_feature() -> None:
    """The random streams above reach every feature with a finite, non-trivial value."""
    stream = Stream(5, FeatureConfig(), 3)
    names = stream.fb.names
    seen = np.zeros(len(names), dtype=bool)
    for _ in range(60):
        v = stream.query(stream.step())
        seen |= (np.isfinite(v) & (v != 0)).any(axis=0)
    assert seen.all(), [n for n, s in zip(names, seen, strict=True) if not s]


def test_window_edges_are_half_open() -> None:
    """tick_flow_10s at t counts trades in (t - 10, t]: the one at t - 10 is out, at t in."""
    fb = FeatureBuilder(1, windows_s=(10.0,), top_k=1)
    fb.reset(t0=0.0)
    fb.on_trades(_trades((0, 5.0, 10.0, 7, 1)))
    names = ["tick_flow_10s", "trades_10s"]
    assert fb.values(names, 14.999).tolist() == [[7.0, 1.0]]
    assert fb.values(names, 15.0).tolist() == [[0.0, 0.0]]
    fb.on_trades(_trades((0, 15.0, 10.0, 3, -1)))
    assert fb.values(names, 15.0).tolist() == [[-3.0, 1.0]]


# -- no look-ahead ------------------------------------------------------------------------------
def test_querying_before_the_last_event_is_refused() -> None:
    stream = Stream(3, FeatureConfig(), 7)
    t2 = 0.0
    for _ in range(5):
        t2 = stream.step()
    with pytest.raises(ConfigError, match=r"values field 't'.*no look-ahead"):
        stream.fb.values(["tick_flow_10s"], t2 - 0.5)


def test_no_event_before_an_observed_time() -> None:
    """Once values at t1 were read, an event before t1 cannot be fed (it would change them)."""
    fb = FeatureBuilder(2)
    fb.reset(t0=0.0)
    fb.values(["tick_flow_10s"], 5.0)
    late = np.array([(1, 4.0, 10.0, 1, 1)], dtype=TRADE_DTYPE)
    with pytest.raises(ConfigError, match=r"trades field 't' = 4\.0 at row 0.*environment 1"):
        fb.on_trades(late)
    bp = np.full((2, 5), np.nan)
    with pytest.raises(ConfigError, match="book field 't'"):
        fb.on_book(4.0, bp, np.zeros((2, 5)), bp, np.zeros((2, 5)))


def test_later_events_do_not_change_an_earlier_snapshot() -> None:
    """Values at t1 from a stream fed to t1 equal the direct computation over the *whole*
    stream (fed out to t2 > t1) restricted to times <= t1."""
    config = FeatureConfig()
    long = Stream(4, config, 11)
    snapshots = []
    for _ in range(30):
        t = long.step()
        snapshots.append((t, long.query(t).copy()))
    for _ in range(30):
        long.step()  # events out to t2
    # the direct computation now holds events after each t1; it must ignore them
    for t1, snap in snapshots:
        assert_same(snap, long.ref.values(long.fb.names, t1), long.fb.names)
    assert long.t > snapshots[-1][0]


# -- resets -------------------------------------------------------------------------------------
def test_reset_of_some_envs_leaves_the_others_untouched() -> None:
    config = FeatureConfig()
    a, b = Stream(6, config, 5), Stream(6, config, 5)
    for _ in range(20):
        a.step()
        b.step()
    names = a.fb.names
    before = b.fb.values(names)
    a.fb.reset([1, 4], t0=a.t)
    a.ref.reset([1, 4], a.t)
    after = a.fb.values(names)
    others = [0, 2, 3, 5]
    np.testing.assert_array_equal(after[others], before[others])
    fresh = FeatureBuilder(6, config)
    fresh.reset(t0=a.t)
    np.testing.assert_array_equal(after[[1, 4]], fresh.values(names)[[1, 4]])
    # and they go on identically afterwards
    t = a.t + 1.0
    later = _trades(*[(e, t, 10.0, 5 + e, 1 - 2 * (e % 2)) for e in others])
    bp, bq = np.full((4, 5), 9.99), np.full((4, 5), 7.0)
    for fb in (a.fb, b.fb):
        fb.on_trades(later)
        fb.on_book(t, bp - np.arange(5) * 0.01, bq, bp + 0.02 + np.arange(5) * 0.01, bq,
                   env_ids=others)
    np.testing.assert_array_equal(a.fb.values(names, t)[others], b.fb.values(names, t)[others])


def test_reset_starts_a_new_stream_whose_clock_may_go_back() -> None:
    fb = FeatureBuilder(2, top_k=1)
    fb.reset(t0=0.0)
    fb.on_trades(_trades((0, 50.0, 10.0, 4, 1), (1, 50.0, 10.0, 6, -1)))
    fb.reset([0], t0=0.0)
    fb.on_trades(_trades((0, 1.0, 10.0, 2, -1)))
    np.testing.assert_array_equal(fb.clock, [1.0, 50.0])
    # one query time per environment, written into a given array
    out = np.full((2, 2), np.nan)
    got = fb.values(["tick_flow_10s", "time_since_trade_s"], np.array([3.0, 55.0]), out=out)
    assert got is out and out.tolist() == [[-2.0, 2.0], [-6.0, 5.0]]


# -- refusals -----------------------------------------------------------------------------------
def _trades(*rows: tuple) -> np.ndarray:
    return np.array(list(rows), dtype=TRADE_DTYPE)


def _with_order() -> FeatureBuilder:
    fb = FeatureBuilder(3, top_k=2)
    fb.reset(t0=0.0, arrival_mid=100.0, side=Side.BUY)
    fb.on_trades(_trades((0, 1.0, 100.0, 5, 1), (2, 1.0, 100.0, 5, -1)))
    return fb


BAD_CALLS: dict[str, tuple[Any, str]] = {
    "unsorted times in an env": (
        lambda fb: fb.on_trades(_trades((1, 3.0, 100.0, 1, 1), (0, 2.0, 100.0, 1, 1),
                                        (1, 2.5, 100.0, 1, 1))),
        r"trades field 't' = 2\.5 at row 2 .*environment 1's last event or query at t = 3\.0",
    ),
    "time before the last event": (
        lambda fb: fb.on_trades(_trades((0, 0.5, 100.0, 1, 1))),
        r"trades field 't' = 0\.5 at row 0 .*t = 1\.0",
    ),
    "negative qty": (
        lambda fb: fb.on_trades(_trades((0, 2.0, 100.0, 1, 1), (1, 2.0, 100.0, -4, 1))),
        r"trades field 'qty' = -4 at row 1 .*must be > 0",
    ),
    "zero qty": (lambda fb: fb.on_trades(_trades((0, 2.0, 100.0, 0, 1))), "field 'qty' = 0"),
    "unknown aggressor": (
        lambda fb: fb.on_trades(_trades((0, 2.0, 100.0, 1, 0))),
        r"trades field 'aggressor' = 0 at row 0 .*\+1",
    ),
    "bad price": (lambda fb: fb.on_trades(_trades((0, 2.0, np.nan, 1, 1))), "field 'px' = nan"),
    "env out of range": (
        lambda fb: fb.on_trades(_trades((3, 2.0, 100.0, 1, 1))),
        r"trades field 'env' = 3 at row 0 .*\[0, 3\)",
    ),
    "wrong dtype": (
        lambda fb: fb.on_trades(np.zeros(1, dtype=[("env", "i4"), ("t", "f8"), ("px", "f8"),
                                                   ("qty", "f8"), ("aggressor", "i1")])),
        "trades field 'qty' has dtype float64, expected int64",
    ),
    "missing field": (
        lambda fb: fb.on_trades(np.zeros(1, dtype=[("env", "i4"), ("t", "f8")])),
        "trades field 'px' is missing",
    ),
    "not an array": (lambda fb: fb.on_trades([(0, 2.0, 1.0, 1, 1)]), "trades must be a numpy"),
    "book negative qty": (
        lambda fb: fb.on_book(2.0, [[99.0, 98.0]] * 3, [[1, -1]] * 3, [[101.0, 102.0]] * 3,
                              [[1, 1]] * 3),
        r"book field 'bid_qty' = -1\.0 at row 0 level 2",
    ),
    "book bids not falling": (
        lambda fb: fb.on_book(2.0, [[99.0, 99.5]] * 3, [[1, 1]] * 3, [[101.0, 102.0]] * 3,
                              [[1, 1]] * 3),
        r"book field 'bid_px' = 99\.5 at row 0 level 2 .*fall",
    ),
    "book crossed": (
        lambda fb: fb.on_book(2.0, [[101.5, 99.0]] * 3, [[1, 1]] * 3, [[101.0, 102.0]] * 3,
                              [[1, 1]] * 3),
        r"book field 'bid_px' at row 0 .*101\.5 is above the best ask 101\.0",
    ),
    "book too few levels": (
        lambda fb: fb.on_book(2.0, [[99.0]] * 3, [[1]] * 3, [[101.0]] * 3, [[1]] * 3),
        r"book field 'bid_px' has shape \(3, 1\), expected \(3, k\) with k >= top_k = 2",
    ),
    "book time before the last event": (
        lambda fb: fb.on_book([0.5, 2.0, 2.0], [[99.0, 98.0]] * 3, [[1, 1]] * 3,
                              [[101.0, 102.0]] * 3, [[1, 1]] * 3),
        r"book field 't' = 0\.5 at row 0 .*environment 0's last event or query at t = 1\.0",
    ),
    "fill qty": (
        lambda fb: fb.on_fills(np.array([(0, 1, 2.0, -5, 100.0, False, 0.0)], dtype=FILL_DTYPE)),
        r"fills field 'qty' = -5 at row 0",
    ),
    "fill price": (
        lambda fb: fb.on_fills(np.array([(0, 1, 2.0, 5, -1.0, False, 0.0)], dtype=FILL_DTYPE)),
        r"fills field 'px' = -1\.0 at row 0",
    ),
    "fill fee": (
        lambda fb: fb.on_fills(np.array([(0, 1, 2.0, 5, 1.0, False, np.inf)], dtype=FILL_DTYPE)),
        r"fills field 'fee' = inf at row 0",
    ),
    "child order qty": (
        lambda fb: fb.on_child_orders(np.array([(0, 1, 2.0, 0)], dtype=CHILD_ORDER_DTYPE)),
        r"child orders field 'qty' = 0 at row 0",
    ),
    "queue position negative": (
        lambda fb: fb.set_queue_position([1.0, -2.0, np.nan]),
        r"queue position field 'ahead' = -2\.0 for environment 1",
    ),
    "start_order side": (
        lambda fb: fb.start_order([0], 100.0, 0), "start_order field 'side' = 0"
    ),
    "start_order arrival mid": (
        lambda fb: fb.start_order([0], -1.0, 1), "start_order field 'arrival_mid' = -1.0"
    ),
    "values at an earlier time": (
        lambda fb: fb.values(["mid"], 0.5), r"values field 't' = 0\.5 .*environment 0"
    ),
    "unknown feature": (
        lambda fb: fb.values(["mid", "alpha"]), "feature 'alpha' is not computed"
    ),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_input_is_refused_by_name_and_nothing_is_applied(case: str) -> None:
    call, message = BAD_CALLS[case]
    fb = _with_order()
    before = fb.values(fb.names)
    clock = fb.clock
    with pytest.raises(ConfigError, match=message) as info:
        call(fb)
    assert "\n" not in str(info.value)
    np.testing.assert_array_equal(fb.clock, clock)
    np.testing.assert_array_equal(fb.values(fb.names), before)


def test_fills_without_a_parent_order_are_refused() -> None:
    fb = FeatureBuilder(2)
    fb.reset(t0=0.0)
    fill = np.array([(1, 0, 1.0, 5, 100.0, True, 0.0)], dtype=FILL_DTYPE)
    with pytest.raises(ConfigError, match=r"fills field 'env' = 1 .*no parent order"):
        fb.on_fills(fill)


def test_fields_in_another_order_are_accepted() -> None:
    other = np.dtype([("qty", "i8"), ("aggressor", "i1"), ("px", "f8"), ("t", "f8"),
                      ("env", "i4"), ("venue", "i2")])
    rows = np.zeros(2, dtype=other)
    rows["qty"], rows["aggressor"], rows["px"], rows["t"], rows["env"] = [5, 7], [1, -1], 10.0, \
        [1.0, 2.0], [0, 0]
    fb = FeatureBuilder(1)
    fb.reset(t0=0.0)
    fb.on_trades(rows)
    assert fb.values(["tick_flow_10s", "volume_10s"]).tolist() == [[-2.0, 12.0]]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"windows_s": (10.0, -1.0)}, "feature config field 'windows_s.1' = -1.0"),
        ({"windows_s": (10.0, 10.0)}, "duplicate windows"),
        ({"top_k": 0}, "feature config field 'top_k' = 0"),
        ({"vol_halflife_s": math.inf}, "feature config field 'vol_halflife_s'"),
        ({"fill_memory": 0}, "feature config field 'fill_memory' = 0"),
        ({"lookback": 3}, "feature config field 'lookback'"),
        ({"trade_capacity": 10, "max_trade_capacity": 5}, "trade_capacity = 10 is above"),
    ],
)
def test_bad_config_is_refused_by_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FeatureBuilder(2, **fields)


# -- bounded memory -----------------------------------------------------------------------------
def test_trade_ring_grows_and_stays_exact() -> None:
    config = FeatureConfig(windows_s=(30.0,), top_k=1, trade_capacity=1, max_trade_capacity=4096)
    stream = Stream(3, config, 21)
    for _ in range(40):
        t = stream.step()
        assert_same(stream.query(t), stream.ref.values(stream.fb.names, t), stream.fb.names)
    assert stream.fb.trade_capacity > 1


def test_more_trades_in_a_window_than_allowed_is_refused_before_anything_changes() -> None:
    fb = FeatureBuilder(2, windows_s=(30.0,), trade_capacity=2, max_trade_capacity=4)
    fb.reset(t0=0.0)
    fb.on_trades(_trades(*[(1, float(i), 10.0, 1, 1) for i in range(4)]))
    before = fb.values(fb.names)
    with pytest.raises(ConfigError, match=r"environment 1 would hold 5 trades.*'max_trade_"
                                          r"capacity' = 4"):
        fb.on_trades(_trades((0, 5.0, 10.0, 1, 1), (1, 5.0, 10.0, 1, 1)))
    np.testing.assert_array_equal(fb.values(fb.names), before)
    # trades that left the window make room again
    fb.on_trades(_trades((1, 30.5, 10.0, 2, -1)))  # (0.5, 30.5] holds t = 1, 2, 3 and 30.5
    assert fb.values(["tick_flow_30s"])[1, 0] == 3 - 2


# -- units --------------------------------------------------------------------------------------
def test_realised_vol_is_the_std_of_one_second_returns_in_bps() -> None:
    sigma_bps, dt = 3.0, 0.1
    n_envs, n = 200, 6000
    rng = np.random.default_rng(4)
    fb = FeatureBuilder(n_envs, top_k=1, vol_halflife_s=60.0)
    fb.reset(t0=0.0)
    log_mid = np.log(100.0) + np.cumsum(
        rng.normal(0, sigma_bps * 1e-4 * math.sqrt(dt), (n, n_envs)), axis=0)
    ones = np.ones((n_envs, 1))
    for i in range(n):
        mid = np.exp(log_mid[i])[:, None]
        fb.on_book(i * dt, mid - 0.005, ones, mid + 0.005, ones)
    est = fb.values(["realised_vol_bps"])[:, 0]
    # each estimate averages ~60 s / ln 2 = 87 s of returns (~865 of them): a few % error
    assert abs(est.mean() / sigma_bps - 1) < 0.02


def test_slippage_sign_is_positive_for_a_cost() -> None:
    fb = FeatureBuilder(2, top_k=1)
    fb.reset(t0=0.0, arrival_mid=100.0, side=np.array([1, -1]))
    fills = np.array([(0, 0, 1.0, 10, 100.05, False, 0.0), (1, 0, 1.0, 10, 100.05, False, 0.0)],
                     dtype=FILL_DTYPE)
    fb.on_fills(fills)
    np.testing.assert_allclose(fb.values(["avg_slippage_bps"])[:, 0], [5.0, -5.0], rtol=1e-9)


def test_registry_names_every_feature() -> None:
    fb = FeatureBuilder(1)
    assert set(fb.names) == set(FEATURES)
    assert all(FEATURES[n] for n in fb.names)
    other = FeatureConfig(windows_s=(1.0, 60.0), top_k=2)
    assert {"tick_flow_1s", "tick_flow_60s", "imbalance_2", "bid_qty_2"} <= set(
        describe_features(other))
    assert FeatureBuilder(1, other).features == describe_features(other)


# -- online normalisation -----------------------------------------------------------------------
def _direct_moments(x: list[float], ages: list[float], decay: float) -> tuple[float, float]:
    w = [decay**a for a in ages]
    m = sum(wi * xi for wi, xi in zip(w, x, strict=True)) / sum(w)
    v = sum(wi * (xi - m) ** 2 for wi, xi in zip(w, x, strict=True)) / sum(w)
    return m, v


@pytest.mark.parametrize("unit", ["events", "seconds"])
def test_normaliser_matches_the_direct_weighted_moments(unit: str) -> None:
    rng = np.random.default_rng(2)
    n_feat, n_buckets, halflife = 3, 4, 7.0
    norm = OnlineNormaliser(n_feat, n_buckets, halflife=halflife, unit=unit, clip=None)
    rows, buckets, times = [], [], []
    t = 0.0
    for _ in range(30):
        batch = rng.normal(5, 2, (8, n_feat))
        batch[rng.random(batch.shape) < 0.2] = np.nan
        b = rng.integers(0, n_buckets, 8)
        ts = t + np.sort(rng.integers(0, 3, 8)).astype(float)
        norm.update(batch, b, ts if unit == "seconds" else None)
        rows.extend(batch)
        buckets.extend(b)
        times.extend(ts)
        t = ts[-1]
    probe = rng.normal(5, 2, (n_buckets, n_feat))
    z = norm.transform(probe, np.arange(n_buckets))
    for b in range(n_buckets):
        for j in range(n_feat):
            seen = [(r[j], tt) for r, bb, tt in zip(rows, buckets, times, strict=True)
                    if bb == b and not np.isnan(r[j])]
            x = [s[0] for s in seen]
            if unit == "events":
                ages = [len(x) - 1 - i for i in range(len(x))]
            else:
                ages = [seen[-1][1] - s[1] for s in seen]
            m, v = _direct_moments(x, ages, 0.5 ** (1.0 / halflife))
            assert z[b, j] == pytest.approx((probe[b, j] - m) / math.sqrt(v + 1e-12), rel=1e-9)
    finite = np.array(rows)
    np.testing.assert_array_equal(norm.domain_min, np.nanmin(finite, axis=0))
    np.testing.assert_array_equal(norm.domain_max, np.nanmax(finite, axis=0))


def test_normaliser_buckets_are_independent_and_unseen_is_nan() -> None:
    norm = OnlineNormaliser(1, 3, halflife=10.0, clip=3.0)
    norm.update(np.array([[1.0], [2.0], [100.0], [101.0]]), np.array([0, 0, 1, 1]))
    z = norm.transform(np.array([[2.0], [2.0], [2.0]]), np.array([0, 1, 2]))
    assert 0 < z[0, 0] < 3 and z[1, 0] == -3.0 and np.isnan(z[2, 0])
    assert norm.transform(np.array([[2.0]]), np.array([2]), nan_to=0.0)[0, 0] == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"values": [[1.0]], "bucket": [3]}, r"normaliser update field 'bucket' = 3 at row 0"),
        ({"values": [[np.inf]], "bucket": [0]}, r"field 'values' = inf at row 0 feature 0"),
        ({"values": [[1.0, 2.0]], "bucket": [0]}, r"field 'values' has shape \(1, 2\)"),
        ({"values": [[1.0], [1.0]], "bucket": [0, 0], "t": [5.0, 4.0]},
         r"field 't' = 4\.0 at row 1 .*bucket 0"),
    ],
)
def test_normaliser_refuses_bad_updates(kwargs: dict[str, Any], message: str) -> None:
    norm = OnlineNormaliser(1, 2, unit="seconds")
    kwargs.setdefault("t", 0.0)
    with pytest.raises(ConfigError, match=message):
        norm.update(**kwargs)
    assert not norm.weight.any()


def test_locked_normaliser_refuses_updates() -> None:
    norm = OnlineNormaliser(1)
    norm.update([[1.0]], [0])
    norm.lock()
    with pytest.raises(ConfigError, match="locked"):
        norm.update([[2.0]], [0])
    norm.unlock()
    norm.update([[2.0]], [0])
    assert norm.weight[0, 0] > 1


# -- the feature schema -------------------------------------------------------------------------
def _trained_schema() -> tuple[FeatureSchema, OnlineNormaliser, tuple[str, ...]]:
    names = ("tick_flow_10s", "spread_bps", "imbalance_1")
    norm = OnlineNormaliser(3, 2, halflife=50.0, unit="seconds")
    rng = np.random.default_rng(0)
    norm.update(rng.normal(0, 1, (40, 3)), rng.integers(0, 2, 40), np.arange(40.0))
    norm.lock()
    return FeatureSchema.build(names, norm, FeatureConfig()), norm, names


def test_schema_round_trips_through_json(tmp_path: Any) -> None:
    schema, norm, names = _trained_schema()
    path = tmp_path / "features.json"
    schema.save(path)
    json.loads(path.read_text())  # plain JSON: no NaN / Infinity literals
    loaded = FeatureSchema.load(path)
    assert loaded == schema
    again = loaded.make_normaliser()
    x = np.random.default_rng(1).normal(0, 1, (5, 3))
    np.testing.assert_array_equal(again.transform(x, [0, 1, 0, 1, 1]),
                                  norm.transform(x, [0, 1, 0, 1, 1]))
    assert again.locked
    np.testing.assert_array_equal(again.last_t, norm.last_t)
    np.testing.assert_array_equal(again.domain_min, norm.domain_min)
    loaded.check(names, FeatureConfig())


@pytest.mark.parametrize(
    ("names", "builder", "message"),
    [
        (("tick_flow_10s", "spread_bps", "imbalance_1", "queue_ahead"), None,
         "feature 'queue_ahead' was not among the features the policy was trained on"),
        (("tick_flow_10s", "spread_bps"), None,
         "feature 'imbalance_1' the policy was trained on is missing"),
        (("spread_bps", "tick_flow_10s", "imbalance_1"), None,
         "feature 'spread_bps' is at position 0; the policy was trained with 'tick_flow_10s'"),
        (("tick_flow_10s", "spread_bps", "imbalance_1"), FeatureConfig(vol_halflife_s=5.0),
         "feature config field 'vol_halflife_s' = 5.0 differs from the training value 30.0"),
    ],
)
def test_schema_refuses_what_the_policy_was_not_trained_on(
    names: tuple[str, ...], builder: FeatureConfig | None, message: str
) -> None:
    schema, _, _ = _trained_schema()
    with pytest.raises(ConfigError, match=message):
        schema.check(names, builder)


def test_schema_flags_values_far_outside_the_training_domain() -> None:
    schema = FeatureSchema.build(("a", "b", "c"), domain_min=[0.0, -1.0, np.nan],
                                 domain_max=[10.0, 1.0, np.nan])
    flags = schema.out_of_domain(np.array([[12.0, 1.4, np.nan], [12.6, -1.6, 0.0]]))
    assert flags.tolist() == [[False, False, False], [True, True, True]]


def test_schema_file_errors_name_the_field(tmp_path: Any) -> None:
    schema, _, _ = _trained_schema()
    data = json.loads(schema.to_json())
    data["normaliser"]["halflife"] = -1
    with pytest.raises(ConfigError, match=r"feature schema field 'normaliser\.halflife' = -1"):
        FeatureSchema.from_json(json.dumps(data))
    data = json.loads(schema.to_json())
    data["domain_min"] = [0.0]
    with pytest.raises(ConfigError, match="domain_min and domain_max must hold 3 values"):
        FeatureSchema.from_json(json.dumps(data))
    with pytest.raises(ConfigError, match="cannot read feature schema"):
        FeatureSchema.load(tmp_path / "missing.json")
