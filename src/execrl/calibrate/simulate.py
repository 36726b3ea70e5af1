"""The calibrated simulator's half of the report: its event tape and its metaorder impact.

``simulated_tape`` runs one book of the calibrated ``LOBMarketConfig`` with no agent for as
long as the real file spans and records the book after every event, so that the simulator's
statistics come from the same code as GOOG's (``execrl.calibrate.stats``). The simulator's
public protocol steps a book a decision interval at a time; event-level statistics (the gaps
between events, event-time returns) need each event, so a small compiled driver here calls
the simulator's own event kernel (``lob_kernels.flow``) one candidate event at a time (its
stopping time set to the book's next candidate) and keeps the book after each accepted one.
The flow is the simulator's, draw for draw: only the recording is added.

``metaorder_impact`` uses the public protocol only: N books buy Q shares with market orders
spread evenly over the execution window (a TWAP metaorder), and the same N books, same seed,
trade nothing; with common random numbers the paired difference of their mids is the impact
of the metaorder alone. Peak impact = that difference at the end of the window, in bps of the
arrival price, per Q.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit
from numpy.typing import NDArray

from execrl.calibrate.tape import (
    KIND_CANCEL,
    KIND_LIMIT,
    KIND_OTHER,
    BookTape,
    tape_from_arrays,
)
from execrl.sim.lob_kernels import flow

#: Seconds of flow simulated before the recorded tape starts (the initial book forgotten).
TRACE_WARMUP_S = 600.0


# Not cached: numba's cache is keyed by this file alone, so a cached copy would keep calling
# the simulator's flow kernel as it was when compiled, after lob_kernels changes (it did, and
# the round trip caught it). Compiling costs a few seconds per process.
@njit(cache=False)
def _trace(t_stop, max_rows, par, edges, cells, limit, cancel, market, init_cdf, lsize_v,
           lsize_c, msize_v, msize_c, init_mean, keys, q, ints, floats, acc_i, acc_f, tr_env,
           tr_t, tr_px, tr_qty, tr_agg, n_tr, fl_env, fl_child, fl_t, fl_qty, fl_px, fl_passive,
           fl_fee, n_fl, i_r, i_events, f_t_next, tick, out_t, out_kind, out_r, out_q, out_side,
           out_idx, out_size, mo_t, mo_size, mo_agg):  # pragma: no cover - numba
    K = q.shape[2]
    active = np.ones(1, np.bool_)
    t_end = np.zeros(1)
    prev = q[0].copy()
    r0 = ints[0, i_r]
    n = 0
    m = 0
    while n < max_rows:
        t_c = floats[0, f_t_next]
        if t_c > t_stop:
            break
        t_end[0] = t_c
        before = ints[0, i_events]
        n_tr[0] = 0
        n_fl[0] = 0
        flow(0, active, t_end, False, par, edges, cells, limit, cancel, market, init_cdf,
             lsize_v, lsize_c, msize_v, msize_c, init_mean, keys, q, ints, floats, acc_i, acc_f,
             tr_env, tr_t, tr_px, tr_qty, tr_agg, n_tr, fl_env, fl_child, fl_t, fl_qty, fl_px,
             fl_passive, fl_fee, n_fl)
        if ints[0, i_events] == before:
            continue  # a thinned-out candidate: nothing happened
        r = ints[0, i_r]
        if n_tr[0] > 0:
            kind = 2  # KIND_MARKET
            for k in range(n_tr[0]):
                mo_t[m] = tr_t[k]
                mo_size[m] = tr_qty[k]
                mo_agg[m] = tr_agg[k]
                m += 1
            out_side[n] = 1 if tr_agg[0] > 0 else 0  # the side of the book it hit
            out_idx[n] = round(tr_px[0] / tick)
            out_size[n] = tr_qty[0]
        else:
            # the price whose shares changed, among those both windows hold (a level that
            # enters the window at its far edge is not the event): up for a limit order, down
            # for a cancel
            diff = 0
            dr = r - r0
            for s in range(2):
                for j in range(K):
                    jp = j - dr if s == 0 else j + dr  # the same price's level before
                    if 0 <= jp < K:
                        d = q[0, s, j] - prev[s, jp]
                        if abs(d) > abs(diff):
                            diff = d
                            out_side[n] = s
                            out_idx[n] = r - j if s == 0 else r + 1 + j
            out_size[n] = abs(diff)
            kind = 0 if diff > 0 else (1 if diff < 0 else 3)
        out_t[n] = t_c
        out_kind[n] = kind
        out_r[n] = r
        out_q[n] = q[0]
        prev[:, :] = q[0]
        r0 = r
        n += 1
    return n, m


def trace_book(config: Any, seconds: float, seed: int) -> SimTrace:
    """One book of ``config`` (a ``LOBMarketConfig``) over ``seconds`` after a warm-up of
    ``TRACE_WARMUP_S``, event by event (module docstring)."""
    from execrl.sim import lob_kernels as kern
    from execrl.sim.lob import LOBMarket

    cfg = config.model_copy(update={"warmup_s": TRACE_WARMUP_S, "step_seconds": 60.0,
                                    "horizon_s": float(seconds), "hawkes": config.hawkes})
    mk = LOBMarket(cfg, n_envs=1, side=1)
    mk.reset(np.random.default_rng(seed))
    # the book's clock: 0 at the end of the warm-up
    rate = float(mk._par[kern.P_LAMBDA])
    max_rows = int(seconds * rate * 1.2 + 1000)
    K = cfg.n_levels
    out_t = np.empty(max_rows)
    out_kind = np.empty(max_rows, np.int8)
    out_r = np.empty(max_rows, np.int64)
    out_q = np.empty((max_rows, 2, K), np.int64)
    out_side = np.zeros(max_rows, np.int8)
    out_idx = np.zeros(max_rows, np.int64)
    out_size = np.zeros(max_rows, np.int64)
    mo_t = np.empty(max_rows)
    mo_size = np.empty(max_rows, np.int64)
    mo_agg = np.empty(max_rows, np.int8)
    n, m = _trace(
        float(seconds), max_rows, mk._par, mk._edges, mk._cells, mk._limit, mk._cancel,
        mk._market, mk._init_cdf, mk._lsize_v, mk._lsize_c, mk._msize_v, mk._msize_c,
        mk._init_mean, mk._keys, mk._q, mk._ints, mk._floats, mk._acc_i, mk._acc_f,
        *mk._tr_cols, mk._n_tr,
        *mk._fl_cols, mk._n_fl, kern.I_R, kern.I_EVENTS, kern.F_T_NEXT, float(cfg.tick_size),
        out_t, out_kind, out_r, out_q, out_side, out_idx, out_size, mo_t, mo_size, mo_agg)
    return SimTrace(cfg, float(seconds), out_t[:n], out_kind[:n], out_r[:n], out_q[:n],
                    out_side[:n], out_idx[:n], out_size[:n], mo_t[:m], mo_size[:m], mo_agg[:m])


@dataclass(frozen=True)
class SimTrace:
    """One simulated book, event by event (``trace_book``): times, ``KIND_*``, the frame r and
    the queues (n, 2, K) after each event, the event's side (0 bid, 1 ask: the side of the book
    it changed), price index and size; and the market orders (time, size, aggressor)."""

    config: Any
    seconds: float
    t: NDArray[np.float64]
    kind: NDArray[np.int8]
    r: NDArray[np.int64]
    q: NDArray[np.int64]
    side: NDArray[np.int8]
    price_index: NDArray[np.int64]
    size: NDArray[np.int64]
    mo_t: NDArray[np.float64]
    mo_size: NDArray[np.int64]
    mo_aggressor: NDArray[np.int8]


def simulated_tape(config: Any, seconds: float, seed: int, start_s: float = 0.0,
                   label: str = "simulated") -> BookTape:
    """The tape of one book of ``config`` (a ``LOBMarketConfig``) over ``seconds`` after a
    warm-up of ``TRACE_WARMUP_S`` (module docstring)."""
    return tape_of_trace(trace_book(config, seconds, seed), start_s, label)


def tape_of_trace(tr: SimTrace, start_s: float = 0.0, label: str = "simulated") -> BookTape:
    """The trace as a ``BookTape`` (occupied levels of the window, priced on the grid; the
    window's edges are what the tape can show)."""
    cfg = tr.config
    K = cfg.n_levels
    tick = cfg.tick_size
    r = tr.r[:, None]
    j = np.arange(K)[None, :]
    bid_px = np.where(tr.q[:, 0] > 0, (r - j) * tick, np.nan)
    ask_px = np.where(tr.q[:, 1] > 0, (r + 1 + j) * tick, np.nan)
    return tape_from_arrays(
        tr.t + start_s, tr.kind, bid_px, tr.q[:, 0], ask_px, tr.q[:, 1], tr.mo_t + start_s,
        tr.mo_size, tr.mo_aggressor, start_s=start_s, end_s=start_s + tr.seconds, tick=tick,
        label=label, bid_seen_to=(tr.r - (K - 1)) * tick, ask_seen_to=(tr.r + K) * tick)


def lobster_day_of_trace(tr: SimTrace, start_s: float = 34_200.0) -> Any:
    """The trace as a LOBSTER day (messages and a book of every occupied level of the window,
    prices on the simulator's grid in LOBSTER units), so that the estimator can be run on the
    simulator's own output: the round trip that shows both read the model the same way."""
    from execrl.data.lobster import (
        DUMMY_ASK_PX,
        DUMMY_BID_PX,
        MESSAGE_DTYPE,
        PRICE_SCALE,
        LobsterDay,
        book_dtype,
    )

    cfg = tr.config
    K = cfg.n_levels
    unit = round(cfg.tick_size * PRICE_SCALE)
    keep = tr.kind != KIND_OTHER
    n = int(keep.sum())
    msg = np.zeros(n, dtype=MESSAGE_DTYPE)
    msg["t"] = tr.t[keep] + start_s
    kind = tr.kind[keep]
    msg["type"] = np.select([kind == KIND_LIMIT, kind == KIND_CANCEL], [1, 3], 4)
    msg["size"] = tr.size[keep]
    msg["price"] = tr.price_index[keep] * unit
    # a limit order's or cancel's side; an execution carries the resting order's side
    msg["direction"] = np.where(tr.side[keep] == 0, 1, -1)
    book = np.zeros(n, dtype=book_dtype(K))
    r = tr.r[keep][:, None]
    j = np.arange(K)[None, :]
    q = tr.q[keep]
    for side, px_name, qty_name, idx, dummy in ((0, "bid_px", "bid_qty", r - j, DUMMY_BID_PX),
                                                (1, "ask_px", "ask_qty", r + 1 + j,
                                                 DUMMY_ASK_PX)):
        full = q[:, side] > 0
        order = np.argsort(~full, axis=1, kind="stable")
        qty = np.take_along_axis(q[:, side], order, axis=1)
        px = np.take_along_axis(idx * unit, order, axis=1)
        book[qty_name] = qty
        book[px_name] = np.where(qty > 0, px, dummy)
    return LobsterDay(messages=msg, book=book, symbol="SIM", date="simulated", levels=K,
                      source="simulated trace", start_s=start_s, end_s=start_s + tr.seconds)


def power_law_fit(x: list[float], y: list[float], se: list[float]) -> dict[str, Any] | None:
    """Weighted least squares of log y on log x (weights (y / se)², the delta method's
    inverse variances of log y), over the positive points: y = prefactor · x^exponent, the
    exponent's standard error, and whether impact is concave (exponent below 1 by more than
    two standard errors). None with fewer than three positive points."""
    xa, ya, sa = (np.asarray(v, dtype=float) for v in (x, y, se))
    ok = (ya > 0) & (sa > 0)
    if ok.sum() < 3:
        return None
    w = (ya[ok] / sa[ok]) ** 2
    A = np.vstack([np.ones(ok.sum()), np.log(xa[ok])]).T
    W = A * w[:, None]
    cov = np.linalg.inv(A.T @ W)
    coef = cov @ (W.T @ np.log(ya[ok]))
    resid = np.log(ya[ok]) - A @ coef
    dof = max(int(ok.sum()) - 2, 1)
    scale = max(1.0, float(resid @ (w * resid)) / dof)  # overdispersion, never below 1
    exponent, err = float(coef[1]), float(math.sqrt(cov[1, 1] * scale))
    concave = exponent + 2 * err < 1.0
    sqrt_z = (exponent - 0.5) / err if err > 0 else math.inf
    verdict = ("Impact is concave in size (exponent below 1 by more than two standard "
               "errors)" if concave else
               "Impact is not shown to be concave in size at this precision")
    verdict += (f"; the square-root law's exponent 0.5 is {abs(sqrt_z):.1f} standard errors "
                f"{'below' if sqrt_z > 0 else 'above'} it"
                + (", so the square-root law is not reproduced." if abs(sqrt_z) > 3 else
                   ", consistent with the square-root law."))
    return {
        "prefactor": float(math.exp(coef[0])), "exponent": exponent, "exponent_se": err,
        "points": int(ok.sum()), "concave": bool(concave), "sqrt_law_z": float(sqrt_z),
        "verdict": verdict,
    }


def metaorder_impact(
    config: Any, sizes: list[int], exec_s: float, n_books: int, seed: int,
    sigma_daily: float, daily_volume: float, step_s: float = 10.0,
) -> dict[str, Any]:
    """Peak impact of TWAP buy metaorders of ``sizes`` shares over ``exec_s`` seconds, each
    against ``n_books`` books paired with the same books trading nothing (module docstring),
    normalised by ``sigma_daily`` (a fraction) and ``daily_volume`` (shares)."""
    from execrl.sim.base import ChildOrderBatch

    n_steps = max(1, round(exec_s / step_s))
    cfg = config.model_copy(update={"horizon_s": n_steps * step_s, "step_seconds": step_s})
    active = np.ones(n_books, dtype=bool)

    def run(q_total: int) -> NDArray[np.float64]:
        mk = cfg.build(n_books, side=1)
        mk.reset(np.random.default_rng(seed))
        arrival = mk.mid.copy()
        orders = ChildOrderBatch.market_orders(n_books)
        base, extra = divmod(q_total, n_steps)
        for k in range(n_steps):
            orders.qty[:] = base + (1 if k < extra else 0)
            orders.child_id[:] = k
            mk.execute(orders, active)
        return (mk.mid - arrival) / arrival

    none = run(0)
    out: dict[str, list[float]] = {k: [] for k in ("q", "q_over_v", "impact_bps",
                                                  "impact_bps_se", "impact_over_sigma",
                                                  "impact_over_sigma_se", "unpaired_se_bps")}
    for q_total in sizes:
        move = run(int(q_total))
        diff = move - none
        out["q"].append(int(q_total))
        out["q_over_v"].append(float(q_total / daily_volume))
        out["impact_bps"].append(float(1e4 * diff.mean()))
        out["impact_bps_se"].append(float(1e4 * diff.std(ddof=1) / math.sqrt(n_books)))
        out["unpaired_se_bps"].append(float(1e4 * math.sqrt(
            (move.var(ddof=1) + none.var(ddof=1)) / n_books)))
        out["impact_over_sigma"].append(float(diff.mean() / sigma_daily))
        out["impact_over_sigma_se"].append(float(diff.std(ddof=1) / math.sqrt(n_books)
                                                 / sigma_daily))
    result: dict[str, Any] = dict(out)
    result["power_law"] = power_law_fit(out["q_over_v"], out["impact_over_sigma"],
                                        out["impact_over_sigma_se"])
    result["how"] = (
        f"Buy metaorders of Q shares executed as TWAP market orders over {exec_s:g} s "
        f"({n_steps} slices of {step_s:g} s) in {n_books:,} independent calibrated books; each "
        f"paired with the same books (same seed, common random numbers) trading nothing. "
        f"Peak impact = mean of the paired mid difference at the end of the execution, in bps "
        f"of the arrival mid; normalised by the day's volatility σ = {100 * sigma_daily:.3g} % "
        f"(realised volatility of the raw mid) and volume V = {daily_volume:,.0f} "
        "shares (the file's executions, hidden included). Standard errors are those of the "
        "paired differences (unpaired ones in `calibration.json` for comparison).")
    return result
