"""Shadow A/B in the service (service.abtest): a candidate in shadow beside the live policy on
the same orders and market paths, on a real Redis and a real registry; its counterfactual IS
is an offline run's, its statistics are `execrl evaluate`'s, and both survive a restart."""

from __future__ import annotations

import numpy as np
import pytest

from ab_helpers import MARKET, desk, done_records, order, serve
from execrl.domain import ParentOrder
from execrl.evaluate.stats import paired_comparison
from execrl.executor.config import ExecutorConfig, PolicyConfig
from execrl.executor_cli import build_executor
from execrl.service.abtest import ShadowAB
from execrl.service.canary import policy_label
from execrl.service.serve import order_seed
from execrl.service.summary import SummaryDB
from redis_server import redis_url  # noqa: F401  (the fixture)

redis = pytest.importorskip("redis")


@pytest.fixture
def client(redis_url):  # noqa: F811
    c = redis.Redis.from_url(redis_url, decode_responses=True)
    c.flushall()
    yield c
    c.close()


def _offline_is(checkpoint: str, label: str, o: dict) -> float:
    """The policy's IS on the order from a plain backtest run on the order's seed."""
    parent = ParentOrder.from_dict(o)
    cfg = ExecutorConfig(policy=PolicyConfig(type=label, checkpoint=checkpoint))
    run = build_executor(cfg, MARKET, parent, mode="backtest").run(
        parent, 1, order_seed(parent.order_id))
    return float(run.episodes["is_bps"].iloc[0])


def test_shadow_candidate_is_the_offline_run_and_its_stats_survive_a_restart(
        client, tmp_path, monkeypatch):
    d = desk(tmp_path, monkeypatch, canary=False)
    summary = f"sqlite:///{tmp_path / 'summary.sqlite'}"
    orders = [order(i) for i in range(6)]
    serve(client, orders, summary_url=summary, registry_url=d.url)
    cand = d.registry.get(d.shadow)
    label = policy_label(cand)
    done = done_records(client)
    db = SummaryDB(summary)
    pairs = db.pairs(d.shadow)
    assert list(pairs["order_id"]) == sorted(o["order_id"] for o in orders)
    for _, p in pairs.iterrows():
        o = next(o for o in orders if o["order_id"] == p["order_id"])
        # the counterfactual is exactly the offline run of the candidate on the order's seed
        assert p["candidate_is_bps"] == _offline_is(cand.path, label, o)
        # and the live side is the order as it traded
        assert p["live_is_bps"] == done[p["order_id"]]["is_bps"]
        assert done[p["order_id"]]["shadow_is_bps"] == p["candidate_is_bps"]
        assert p["live_hash"] == d.live and done[p["order_id"]]["route"] == "live"
    # the candidate differs from the live policy: the comparison is not trivially zero
    assert (pairs["candidate_is_bps"] != pairs["live_is_bps"]).all()

    ab = ShadowAB(db)
    got = ab.comparison(d.shadow)
    expect = paired_comparison(label, pairs["candidate_is_bps"].to_numpy(),
                               policy_label(d.registry.get(d.live)),
                               pairs["live_is_bps"].to_numpy())
    assert got == expect and got.n == len(orders)

    # a restarted service (new process state: new database handle, new server) re-reads the
    # pairs: the same statistics, to the bit; an order already paired is not paired twice
    db.close()
    again = ShadowAB(SummaryDB(summary)).comparison(d.shadow)
    assert again.to_dict() == got.to_dict()
    more = [order(i) for i in range(6, 9)]
    serve(client, more, summary_url=summary, registry_url=d.url)
    after = SummaryDB(summary).pairs(d.shadow)
    assert len(after) == 9 and after["order_id"].is_unique
    assert ShadowAB(SummaryDB(summary)).comparison(d.shadow).n == 9


def test_no_shadow_without_a_candidate_or_with_no_shadow(client, tmp_path, monkeypatch):
    d = desk(tmp_path, monkeypatch, canary=False)
    summary = f"sqlite:///{tmp_path / 'summary.sqlite'}"
    serve(client, [order(1)], summary_url=summary, registry_url=d.url, shadow=False)
    rows = SummaryDB(summary).orders()
    assert rows["shadow_policy_hash"].tolist() == [""]
    assert np.isnan(rows["shadow_is_bps"]).all()
    assert SummaryDB(summary).pairs(d.shadow).empty
    assert ShadowAB(SummaryDB(summary)).comparison(d.shadow) is None


def test_on_the_stream_venue_the_shadow_meets_the_entries_the_live_order_met(
        client, tmp_path, monkeypatch):
    """``serve --venue stream``: the candidate's counterfactual IS is its run on a paper
    market fed the STREAM_MARKET entries the live order's batch met (not the order's
    simulated path)."""
    import threading
    import time

    from execrl.service.feed import FeedConfig, run_feed
    from execrl.service.paper import StreamFeed
    from execrl.service.serve import STATE_BATCH, ServeConfig, Server
    from execrl.service.streams import STREAM_MARKET, STREAM_ORDERS, decode, encode

    d = desk(tmp_path, monkeypatch, canary=False)
    summary = f"sqlite:///{tmp_path / 'summary.sqlite'}"
    o = order(1)
    server = Server(client, ServeConfig(market=MARKET, venue="stream", max_orders=1,
                                        batch_window_ms=1, summary_url=summary,
                                        registry_url=d.url), log=lambda text: None)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        client.xadd(STREAM_ORDERS, encode(o))
        deadline = time.monotonic() + 30
        while client.hlen(STATE_BATCH) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        parent = ParentOrder.from_dict(o)
        steps = MARKET.for_order(parent).n_steps
        run_feed(client, FeedConfig(MARKET, parent, steps=steps + 2, speed=0.0, seed=8), "DEMO")
        thread.join(timeout=60)
        assert not thread.is_alive()
    finally:
        server.stopping.set()
        thread.join(timeout=10)
    entries = [decode(f) for _, f in client.xrange(STREAM_MARKET)]
    cand = d.registry.get(d.shadow)
    cfg = ExecutorConfig(policy=PolicyConfig(type=policy_label(cand), checkpoint=cand.path))
    it = iter(entries)
    run = build_executor(cfg, MARKET, parent, mode="shadow").run(
        parent, 1, order_seed(parent.order_id),
        venue=StreamFeed(symbol="DEMO", source=lambda env: next(it)))
    on_stream = float(run.episodes["is_bps"].iloc[0])
    pair = SummaryDB(summary).pairs(d.shadow)
    assert list(pair["order_id"]) == ["T-1"]
    assert pair["candidate_is_bps"].iloc[0] == on_stream
    assert on_stream != _offline_is(cand.path, policy_label(cand), o)
    assert done_records(client)["T-1"]["shadow_is_bps"] == on_stream
