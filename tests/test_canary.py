"""Canary routing (service.canary): the share by order id, each SLO gate against hand-built
inputs, the minimum sample, and the automatic fallback, recorded in a real registry and
seen by the service on a real Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ab_helpers import MARKET, desk, done_records, order, serve
from execrl.domain import ConfigError
from execrl.service.canary import (
    CanaryConfig,
    CanarySample,
    Router,
    canary_bucket,
    evaluate_gates,
    in_canary,
    policy_label,
)
from execrl.service.streams import decode
from execrl.service.summary import SummaryDB
from redis_server import redis_url  # noqa: F401  (the fixture)

redis = pytest.importorskip("redis")
IDS = [f"ORD-{i:06d}" for i in range(20_000)]


@pytest.fixture
def client(redis_url):  # noqa: F811
    c = redis.Redis.from_url(redis_url, decode_responses=True)
    c.flushall()
    yield c
    c.close()


def test_share_is_ten_percent_of_many_ids_and_the_same_in_another_process():
    chosen = [i for i in IDS if in_canary(i, 0.10)]
    n, p = len(IDS), 0.10
    assert abs(len(chosen) / n - p) < 4 * np.sqrt(p * (1 - p) / n)  # ~ +-0.85 %
    assert CanaryConfig().share == 0.10
    # nested: a smaller share takes a subset; 0 takes none, 1 all
    assert set(i for i in IDS if in_canary(i, 0.05)) <= set(chosen)
    assert not any(in_canary(i, 0.0) for i in IDS) and all(in_canary(i, 1.0) for i in IDS)
    # a restarted process (another hash seed) makes the same choice
    code = ("import json,sys; from execrl.service.canary import in_canary; "
            "print(json.dumps([i for i in json.load(sys.stdin) if in_canary(i, 0.1)]))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(IDS), env=env,
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == chosen
    assert 0.0 <= min(map(canary_bucket, IDS)) and max(map(canary_bucket, IDS)) < 1.0


def _sample(latencies=(1.0,) * 1000, decisions=2000, violations=0, is_bps=None,
            baseline=None) -> CanarySample:
    base = np.arange(100, dtype=float) if baseline is None else np.asarray(baseline, float)
    return CanarySample(np.asarray(latencies, float), decisions, violations,
                        base + 1.0 if is_bps is None else np.asarray(is_bps, float), base)


def _verdicts(sample: CanarySample, config: CanaryConfig | None = None) -> dict[str, bool]:
    return {g.gate: g.failed for g in evaluate_gates(sample, config or CanaryConfig())}


def test_each_gate_fails_when_its_slo_is_broken_and_holds_otherwise():
    ok = {"latency_p95": False, "violations_per_1k": False, "is_p95_vs_ac": False}
    assert _verdicts(_sample()) == ok
    # latency: p95 < 50 ms; 6 % of decisions at 60 ms put the p95 there, 4 % do not
    slow = [10.0] * 940 + [60.0] * 60
    assert _verdicts(_sample(latencies=slow)) == {**ok, "latency_p95": True}
    assert _verdicts(_sample(latencies=[10.0] * 960 + [60.0] * 40)) == ok
    assert _verdicts(_sample(latencies=[50.0] * 1000))["latency_p95"]  # at the SLO: broken
    assert _verdicts(_sample(latencies=[49.9] * 1000)) == ok
    # violations: < 1 per 1,000 decisions
    assert _verdicts(_sample(decisions=1000, violations=1)) == {**ok, "violations_per_1k": True}
    assert _verdicts(_sample(decisions=2000, violations=1)) == ok
    assert _verdicts(_sample(decisions=2000, violations=2))["violations_per_1k"]
    # IS: the canary's p95 at most 2 bps above the AC baseline's p95 on the same orders
    base = np.arange(100, dtype=float)
    assert _verdicts(_sample(is_bps=base + 3.0)) == {**ok, "is_p95_vs_ac": True}
    assert _verdicts(_sample(is_bps=base + 1.5)) == ok
    assert _verdicts(_sample(is_bps=base - 10.0)) == ok  # cheaper is fine
    # the tail counts: the worst 10 % 4 bps worse breaks it, the mean moving 0.4 bps
    tail = base.copy()
    tail[90:] += 4.0
    assert _verdicts(_sample(is_bps=tail))["is_p95_vs_ac"]
    gate = evaluate_gates(_sample(is_bps=base + 3.0), CanaryConfig())[2]
    assert gate.value == pytest.approx(3.0) and gate.n == 100 and "FAIL" in gate.text()


def test_minimum_sample_before_a_gate_judges():
    cfg = CanaryConfig(min_latencies=500, min_decisions=1000, min_orders=30)
    few = _sample(latencies=[99.0] * 499, decisions=999, violations=10,
                  is_bps=np.arange(29) + 50.0, baseline=np.arange(29, dtype=float))
    results = evaluate_gates(few, cfg)
    assert [g.judged for g in results] == [False, False, False]
    assert not any(g.failed for g in results)
    assert all("waiting" in g.text() for g in results)
    enough = _sample(latencies=[99.0] * 500, decisions=1000, violations=10,
                     is_bps=np.arange(30) + 50.0, baseline=np.arange(30, dtype=float))
    assert [g.failed for g in evaluate_gates(enough, cfg)] == [True, True, True]
    empty = CanarySample(np.empty(0), 0, 0, np.empty(0), np.empty(0))
    assert not any(g.failed for g in evaluate_gates(empty, CanaryConfig(min_latencies=1,
                                                                         min_decisions=1,
                                                                         min_orders=1)))


@pytest.mark.parametrize("field,value", [("share", 1.5), ("share", -0.1), ("share", "x"),
                                         ("min_orders", 0), ("latency_p95_ms", float("nan"))])
def test_bad_canary_config_is_one_line_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=f"canary field '{field}' = ") as info:
        CanaryConfig(**{field: value})
    assert "\n" not in str(info.value)


def test_router_flags_and_automatic_fallback_in_the_registry(tmp_path, monkeypatch):
    from execrl.executor.config import PolicyConfig

    d = desk(tmp_path, monkeypatch, shadow=False)
    reg, people = d.registry, d.people
    router = Router(reg, PolicyConfig(type="twap"), "almgren_chriss", CanaryConfig(share=0.5))
    routes = {i: router.route(i, "DEMO") for i in IDS[:400]}
    canary = [i for i, r in routes.items() if r.route == "canary"]
    assert canary == [i for i in IDS[:400] if in_canary(i, 0.5)]
    assert {r.policy_hash for i, r in routes.items() if i not in canary} == {d.live}
    assert {r.policy_hash for i, r in routes.items() if i in canary} == {d.canary}
    assert routes[canary[0]].policy == policy_label(reg.get(d.canary))
    # the live policy's flag sends its flow to the fallback schedule (AC here), the canary's
    # share stays with the canary
    reg.set_flag(people["tina"], d.live, True, "runbook step 1")
    live_id = next(i for i in IDS if i not in canary and i in routes)
    r = router.route(live_id, "DEMO")
    assert (r.route, r.policy, r.flagged) == ("fallback", "ac", d.live)
    assert router.route(canary[0], "DEMO").route == "canary"
    reg.set_flag(people["pam"], d.live, False)
    # a gate fails: the canary is quarantined by system with the gate as reason, its share
    # goes to 0 (its orders return to the live policy)
    failed = [g for g in evaluate_gates(_sample(latencies=[80.0] * 1000), CanaryConfig())
              if g.failed]
    assert router.fall_back(d.canary, failed) is True
    assert reg.get(d.canary).state == "quarantined"
    event = reg.events(d.canary)[-1]
    assert (event["actor"], event["action"], event["from_state"]) == ("system", "quarantine",
                                                                      "canary")
    assert "latency_p95" in event["reason"] and event["detail"]["gates"][0]["failed"]
    assert {router.route(i, "DEMO").policy_hash for i in canary} == {d.live}
    # a second process that had not seen the failure finds no canary in the registry either
    other = Router(reg, PolicyConfig(type="twap"), "twap", CanaryConfig(share=0.5))
    assert {other.route(i, "DEMO").route for i in canary} == {"live"}
    assert other.fall_back(d.canary, failed) is False  # moved already: nothing twice


def test_service_falls_back_automatically_when_a_gate_fails(client, tmp_path, monkeypatch):
    d = desk(tmp_path, monkeypatch, shadow=False)
    summary = f"sqlite:///{tmp_path / 'summary.sqlite'}"
    # every order to the canary; a latency SLO nothing meets, judged from the first order
    gates = CanaryConfig(share=1.0, latency_p95_ms=0.0, min_latencies=1)
    logs: list[str] = []
    serve(client, [order(1)], summary_url=summary, registry_url=d.url, canary=gates,
          concurrency=1, log=logs.append)
    assert d.registry.get(d.canary).state == "quarantined"
    assert any("canary" in s and "latency_p95" in s for s in logs)
    serve(client, [order(2), order(3)], summary_url=summary, registry_url=d.url, canary=gates,
          concurrency=1)
    rows = SummaryDB(summary).orders().set_index("order_id")
    assert rows["route"].to_dict() == {"T-1": "canary", "T-2": "live", "T-3": "live"}
    assert rows.loc["T-1", "policy_hash"] == d.canary
    assert set(rows.loc[["T-2", "T-3"], "policy_hash"]) == {d.live}
    done = done_records(client)
    assert done["T-1"]["route"] == "canary" and done["T-2"]["policy_hash"] == d.live
    # the gate's inputs are on record: the canary order's AC baseline in shadow, its latencies
    seen = SummaryDB(summary).canary_rows(d.canary)
    assert seen["order_id"].tolist() == ["T-1"]
    assert len(json.loads(seen["latencies_ms"].iloc[0])) == seen["decisions"].iloc[0] == 10
    assert np.isfinite(seen["baseline_is_bps"]).all()
    assert seen["is_bps"].iloc[0] == done["T-1"]["is_bps"]


def test_a_canary_within_its_slos_keeps_its_share(client, tmp_path, monkeypatch):
    d = desk(tmp_path, monkeypatch, shadow=False)
    summary = f"sqlite:///{tmp_path / 'summary.sqlite'}"
    lenient = CanaryConfig(share=1.0, latency_p95_ms=1e9, is_p95_margin_bps=1e9,
                           violations_per_1k=1e9,
                           min_latencies=1, min_decisions=1, min_orders=1)
    serve(client, [order(1), order(2)], summary_url=summary, registry_url=d.url,
          canary=lenient)
    assert d.registry.get(d.canary).state == "canary"
    assert set(SummaryDB(summary).orders()["route"]) == {"canary"}


def test_service_sends_flagged_flow_to_the_fallback_schedule(client, tmp_path, monkeypatch):
    from execrl.service.metrics import scrape_samples

    d = desk(tmp_path, monkeypatch, shadow=False, canary=False)
    summary = f"sqlite:///{tmp_path / 'summary.sqlite'}"
    d.registry.set_flag(d.people["tina"], "*", True, "runbook step 1: everything to fallback")
    server = serve(client, [order(1), order(2)], summary_url=summary, registry_url=d.url)
    rows = SummaryDB(summary).orders()
    assert set(rows["route"]) == {"fallback"} and set(rows["policy"]) == {"twap"}
    text = server.hooks.metrics.exposition().decode()
    got = {(n, tuple(sorted(lb.items()))): v for n, lb, v in scrape_samples(text)}
    assert got[("exec_fallback_total", (("policy", d.live[:12]),
                                        ("trigger", "registry_flag")))] == 2
    assert got[("exec_is_bps_count", (("policy", "twap"),))] == 2
    # the same orders, unflagged, go to the live policy; with no live policy, to the fallback
    d.registry.set_flag(d.people["pam"], "*", False)
    from execrl.executor.config import PolicyConfig

    router = Router(d.registry, PolicyConfig(type="twap"), "vwap", CanaryConfig())
    assert router.route("T-1", "DEMO").policy_hash == d.live
    d.registry.quarantine(d.people["rita"], d.live, "test")
    r = router.route("T-1", "DEMO")
    assert (r.route, r.policy, r.flagged) == ("fallback", "vwap", "")
    assert "no live policy" in r.reason


def test_canary_and_live_orders_never_share_a_batch_and_each_order_is_timed(client, tmp_path,
                                                                            monkeypatch):
    """The route is part of the service's batch key: orders that could share a batch (one
    side, one horizon) split by route; each canary order's gates see one latency per
    decision it took (the batch's step clock, per order)."""
    d = desk(tmp_path, monkeypatch, shadow=False)
    summary = f"sqlite:///{tmp_path / 'summary.sqlite'}"
    lenient = CanaryConfig(share=0.5, latency_p95_ms=1e9, is_p95_margin_bps=1e9,
                           violations_per_1k=1e9, min_latencies=1, min_decisions=1, min_orders=1)
    orders = [order(2 * i) for i in range(1, 9)]  # all buys
    ids = [o["order_id"] for o in orders]
    assert 0 < sum(in_canary(i, 0.5) for i in ids) < len(ids)
    serve(client, orders, summary_url=summary, registry_url=d.url, canary=lenient,
          concurrency=len(orders))
    done = done_records(client)
    routes: dict[str, set[str]] = {}
    for m in done.values():
        routes.setdefault(m["batch"], set()).add(m["route"])
        assert m["route"] == ("canary" if in_canary(m["parent_id"], 0.5) else "live")
        assert m["policy_hash"] == (d.canary if m["route"] == "canary" else d.live)
    assert all(len(r) == 1 for r in routes.values()), routes
    assert set().union(*routes.values()) == {"canary", "live"}
    rows = SummaryDB(summary).canary_rows(d.canary)
    assert sorted(rows["order_id"]) == sorted(i for i in ids if in_canary(i, 0.5))
    for _, row in rows.iterrows():
        lat = json.loads(row["latencies_ms"])
        assert len(lat) == row["decisions"] == done[row["order_id"]]["steps"]
        assert all(v > 0 for v in lat)


def _ppo_checkpoint(folder):
    """A checkpoint of a random categorical (PPO) policy whose export names its algorithm,
    as ``execrl train`` writes one: the executor reports its action probabilities."""
    import pandas as pd

    from execrl.agents.checkpoint import TrainOutput, write_checkpoint
    from execrl.agents.export import NumpyPolicy
    from execrl.env.factory import DEFAULT_ORDER, EnvConfig
    from registry_helpers import OBS

    rng = np.random.default_rng(3)
    policy = NumpyPolicy(
        name="ppo", observations=OBS, action_set="seed004", head="argmax", activation="relu",
        weights=[rng.normal(size=(4, 8)), rng.normal(size=8), rng.normal(size=(8, 5)),
                 rng.normal(size=5)], meta={"algo": "ppo"})
    write_checkpoint(folder, algo="ppo", env_name="ac",
                     env_config=EnvConfig(market=MARKET, reward="risk_adjusted"),
                     order=DEFAULT_ORDER, seed=3, steps=1, hyperparams={}, wall_time_s=0.0,
                     output=TrainOutput(policy=policy, curve=pd.DataFrame()))
    return folder


def test_decision_traces_carry_the_policys_confidence_state_and_hash(client, tmp_path):
    """What the console reads of each decision (api.Tape): the PPO policy's confidence (its
    largest action probability), the watchdog's state, the policy's hash and the policy
    call's time; the done record names the policy and the episode's return."""
    from execrl.agents.export import NumpyPolicy
    from execrl.env.spaces import ACTION_SETS
    from execrl.executor.config import ExecutorConfig, PolicyConfig
    from execrl.executor.loop import ACTING
    from execrl.service.streams import STREAM_RESEARCH

    ck = _ppo_checkpoint(tmp_path / "ck")
    digest = NumpyPolicy.load(ck, checkpoint=True).policy_hash()
    cfg = ExecutorConfig(policy=PolicyConfig(type="ppo", checkpoint=str(ck)))
    serve(client, [order(1), order(2)], executor=cfg)
    traces = [decode(f) for _, f in client.xrange(STREAM_RESEARCH)]
    done = done_records(client)
    assert len(traces) == sum(m["steps"] for m in done.values()) > 0
    n_actions = ACTION_SETS["seed004"].n_actions  # the checkpoint's action set
    for t in traces:
        assert 1.0 / n_actions <= t["confidence"] <= 1.0
        assert t["acting"] in ACTING and t["policy_hash"] == digest
        assert t["latency_ms"] > 0
    assert len({t["confidence"] for t in traces}) > 1  # it follows the observations
    for m in done.values():
        assert m["policy_hash"] == digest and m["route"] == "live"
        assert isinstance(m["return"], float)
