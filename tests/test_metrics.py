"""The executor's Prometheus metrics (seed 001 §8) and the alert rules of seed 001 §12.

The metrics are fed from real executor runs and checked against the runs' own episodes and
audit trails; ``/metrics`` is scraped over HTTP; the rules file is checked with
``promtool check rules`` and unit-tested with ``promtool test rules`` on series recorded
from ExecMetrics while it is fed the runs of a quiet, a faulty, a slow and a greedy policy,
each alert asserted to fire where it should and to stay silent where it should not."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from execrl.evaluate.stats import cvar
from execrl.executor.audit import AuditTrail, read_trail
from execrl.executor.loop import Executor, Safety, context_for
from execrl.policies.baselines import make_baseline
from execrl.presets import preset_market
from execrl.safety import guard
from execrl.safety.guard import RiskLimits
from execrl.safety.watchdog import TRIGGERS, WatchdogConfig
from execrl.service.metrics import (
    DEFAULT_METRICS_PORT,
    GUARD_KINDS,
    LATENCY_BUCKETS_MS,
    ExecMetrics,
    guard_kind,
    scrape_samples,
    violation_kinds,
)

RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "rules.yml"
AC = preset_market("ac")
AC_ORDER = AC.default_order()
LOB = preset_market("lob")
# the seed's price and loss triggers off: the AC example's 5-day sell meets 1 % moves
QUIET = dict(price_band=None, is_vs_twap=None)
FEATURES = ("remaining_ratio", "elapsed_ratio")
SEED_NAMES = ("exec_is_bps", "exec_tail_cvar_bps", "exec_child_rate", "exec_violations",
              "exec_decision_latency_ms")


class _Scripted:
    """A policy on the seed004 action set: ``action`` every time after ``good`` calls of
    ``ok``; ``fault`` ``raises`` makes it raise instead; ``sleep_s`` per call."""

    def __init__(self, action: int = 1, good: int = 0, ok: int = 1, fault: str = "",
                 sleep_s: float = 0.0, action_set: str = "seed004", name: str = "scripted"):
        self.name, self.observations, self.action_set = name, FEATURES, action_set
        self.action, self.good, self.ok, self.fault, self.sleep_s = action, good, ok, fault, sleep_s
        self.calls = 0

    def act(self, obs, masks=None):
        self.calls += 1
        if self.sleep_s:
            time.sleep(self.sleep_s)
        if self.calls <= self.good:
            return np.full(obs.shape[0], self.ok)
        if self.fault == "raises":
            raise RuntimeError("model server gone")
        return np.full(obs.shape[0], self.action)


class _Slow:
    """``policy``'s decisions, each ``sleep_s`` late."""

    def __init__(self, policy, sleep_s: float):
        self.policy, self.sleep_s, self.name = policy, sleep_s, "slow"
        self.observations, self.action_set = policy.observations, policy.action_set

    def act(self, obs, masks=None):
        time.sleep(self.sleep_s)
        return self.policy.act(obs, masks)


def _run(policy, tmp: Path, n: int, market=AC, order=AC_ORDER, limits=None):
    """An audited, watched executor run: (ExecutionRun, its trail's decisions)."""
    audit = AuditTrail(tmp / f"trail-{policy.name}", features=FEATURES,
                       labels={"trigger": TRIGGERS})
    safety = Safety(limits=limits or RiskLimits(), watchdog=WatchdogConfig(**QUIET))
    run = Executor(policy, market, safety=safety, audit=audit).run(order, n, seed=11)
    return run, read_trail(tmp / f"trail-{policy.name}").decisions


def _samples(m: ExecMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(name, tuple(sorted(labels.items()))): v
            for name, labels, v in scrape_samples(m.exposition().decode())}


def _value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# -- the metrics against the runs they were fed ------------------------------------------------
def test_guard_kinds_name_every_guard_verdict():
    codes = {getattr(guard, n): n.removeprefix("GUARD_").lower() for n in dir(guard)
             if n.startswith("GUARD_") and isinstance(getattr(guard, n), int)
             and n != "GUARD_FIRST_REJECT"}
    assert dict(enumerate(GUARD_KINDS)) == codes
    assert guard_kind(guard.GUARD_DUPLICATE) == "guard_duplicate"


def test_metrics_add_up_to_the_run_and_its_trail(tmp_path):
    # everything at once, then the same child again: the duplicate window refuses repeats
    policy = _Scripted(action=4, action_set="seed003lob", name="greedy")
    run, decisions = _run(policy, tmp_path, 8, market=LOB, order=LOB.default_order(),
                          limits=RiskLimits(duplicate_window_s=600.0))
    m = ExecMetrics()
    m.observe_run(run, decisions)
    s = _samples(m)
    e = run.episodes
    refused = int((decisions["guard_code"] == guard.GUARD_DUPLICATE).sum())
    assert refused > 0 and refused == int(e["guard_rejects"].sum())
    assert _value(s, "exec_violations_total", kind="guard_duplicate") == refused
    assert _value(s, "exec_decisions_total", policy="greedy") == len(decisions)
    assert _value(s, "exec_decision_latency_ms_count") == len(decisions)
    assert np.isclose(_value(s, "exec_decision_latency_ms_sum"),
                      decisions["latency_us"].sum() / 1e3)
    sent = decisions[decisions["child_qty"] > 0]
    assert int(e["child_orders"].sum()) == len(sent)
    for kind, n in sent["child_type"].value_counts().items():
        assert _value(s, "exec_child_rate_total", type=kind) == n
    assert _value(s, "exec_is_bps_count", policy="greedy") == len(e)
    # negative buckets: no _sum (it could fall; prometheus_client leaves it out)
    assert ("exec_is_bps_sum", (("policy", "greedy"),)) not in s
    assert np.isclose(_value(s, "exec_tail_cvar_bps", policy="greedy"), cvar(e["is_bps"]))
    # the buckets are cumulative counts of the orders' IS
    for edge in (0.0, 5.0, 10.0):
        assert _value(s, "exec_is_bps_bucket", policy="greedy", le=str(edge)) == \
            int((e["is_bps"] <= edge).sum())
    diff = e["is_bps"].to_numpy() - run.shadow_twap["is_bps"].to_numpy()
    assert np.isclose(_value(s, "exec_is_vs_baseline_bps", policy="greedy",
                             baseline="twap"), diff.mean())


def test_a_faulty_policy_counts_its_fallbacks_and_triggers(tmp_path):
    run, decisions = _run(_Scripted(good=2, fault="raises", name="faulty"), tmp_path, 16)
    m = ExecMetrics(tail_window=4)
    m.observe_run(run, decisions)
    s = _samples(m)
    assert (run.episodes["finished_by"] == "fallback").all()
    assert _value(s, "exec_fallback_total", policy="faulty", trigger="policy_fault") == 16
    assert _value(s, "exec_violations_total", kind="watchdog_policy_fault") == 16
    assert _value(s, "exec_orders_total", policy="faulty") == 16
    # the tail and the paired gauges look at the last tail_window orders only
    e = run.episodes
    assert np.isclose(_value(s, "exec_tail_cvar_bps", policy="faulty"),
                      cvar(e["is_bps"].to_numpy()[-4:]))
    diff = (e["is_bps"] - run.shadow_twap["is_bps"]).to_numpy()
    assert np.isclose(_value(s, "exec_is_vs_baseline_bps", policy="faulty", baseline="twap"),
                      diff[-4:].mean())
    # the service's workers feed it at once: nothing lost, the windows still consistent
    shared = ExecMetrics(tail_window=64)
    workers = [threading.Thread(target=shared.observe_orders, args=(e, run.shadow_twap))
               for _ in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    t = _samples(shared)
    assert _value(t, "exec_orders_total", policy="faulty") == 8 * 16
    assert np.isclose(_value(t, "exec_tail_cvar_bps", policy="faulty"),
                      cvar(np.tile(e["is_bps"].to_numpy(), 4)))
    # without the trail, decisions and child orders come from the episodes
    bare = ExecMetrics()
    bare.observe_run(run)
    b = _samples(bare)
    assert _value(b, "exec_decisions_total", policy="faulty") == run.episodes["steps"].sum()
    assert _value(b, "exec_child_rate_total", type="unknown") == \
        run.episodes["child_orders"].sum()
    assert _value(b, "exec_decision_latency_ms_count") == 0


def test_metrics_endpoint_serves_the_exposition_over_http(tmp_path):
    twap = make_baseline("twap", context_for(AC, AC_ORDER))
    run, decisions = _run(twap, tmp_path, 8)
    m = ExecMetrics()
    m.observe_run(run, decisions)
    m.set_queue_lag(0.25, stream="orders")
    server = m.serve(port=0)
    try:
        with urllib.request.urlopen(server.url, timeout=5) as reply:
            assert reply.status == 200
            assert reply.headers["Content-Type"].startswith("text/plain")
            body = reply.read().decode()
    finally:
        server.close()
    families = {f.name: f.type for f in text_string_to_metric_families(body)}
    assert {name: families.get(name) for name in SEED_NAMES} == dict(
        zip(SEED_NAMES, ("histogram", "gauge", "counter", "counter", "histogram"), strict=True))
    samples = {(n, tuple(sorted(lb.items()))): v for n, lb, v in scrape_samples(body)}
    # a quiet run: every kind of violation on record, at 0
    kinds = {dict(lb)["kind"] for n, lb in samples if n == "exec_violations_total"}
    assert kinds == set(violation_kinds()) and "guard_kill" in kinds
    assert all(v == 0 for (n, _), v in samples.items() if n == "exec_violations_total")
    assert _value(samples, "exec_is_bps_count", policy="twap") == 8
    assert _value(samples, "exec_queue_lag_seconds", stream="orders") == 0.25
    # the same numbers through the textfile a one-shot command leaves behind
    text = m.write_textfile(tmp_path / "execrl.prom").read_text()
    assert {(n, tuple(sorted(lb.items()))): v for n, lb, v in scrape_samples(text)} == samples
    # a second registry is separate: nothing leaks between instances
    assert _value(_samples(ExecMetrics()), "exec_is_bps_count", policy="twap") == 0


# -- the alert rules -------------------------------------------------------------------------
def _promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool not found (Debian package prometheus; scripts/test.sh installs "
                    "it where it can)")
    return tool


def test_rules_file_passes_promtool_check():
    out = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 8 rules found" in out.stdout


def test_prometheus_config_loads_the_rules_and_scrapes_the_service():
    config = RULES.parent / "prometheus.yml"
    out = subprocess.run([_promtool(), "check", "config", str(config)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 8 rules found" in out.stdout
    target = yaml.safe_load(config.read_text())["scrape_configs"][0]["static_configs"][0]
    assert target["targets"] == [f"127.0.0.1:{DEFAULT_METRICS_PORT}"]


MINUTES = 45  # recorded scrapes, one a minute


def _recorded(feeds: list) -> list[dict]:
    """promtool input series: ExecMetrics fed ``feeds[minute]`` (a run and its decisions)
    once a minute and scraped after each feed."""
    m = ExecMetrics()
    series: dict[str, list[float | None]] = {}
    for minute, (run, decisions) in enumerate(feeds):
        m.observe_run(run, decisions)
        for name, labels, v in scrape_samples(m.exposition().decode()):
            key = name + "{" + ",".join(f'{k}="{labels[k]}"' for k in sorted(labels)) + "}"
            series.setdefault(key, [None] * minute).append(v)
    return [{"series": k, "values": " ".join("_" if v is None else repr(v) for v in vs)}
            for k, vs in series.items()]


ALERTS = ("ExecViolationSpike", "ExecDecisionLatencyP95AboveSLO",
          "ExecISDegradationVsBaseline", "ExecFallbackRateHigh")


def _quantile(q: float, values: np.ndarray, edges: tuple[float, ...]) -> float:
    """PromQL's histogram_quantile on the buckets ``values`` fall in: linear inside the
    bucket the rank lands in, from 0 below the first positive edge."""
    counts = np.array([(values <= e).sum() for e in edges], dtype=np.float64)
    rank = q * counts[-1]
    i = int(np.searchsorted(counts, rank, side="left"))
    if edges[i] == np.inf:
        return edges[i - 1]
    lo, below = (edges[i - 1], counts[i - 1]) if i else (0.0, 0.0)
    return lo + (edges[i] - lo) * (rank - below) / (counts[i] - below)


def _expected_value(alert: str, run, decisions) -> float:
    """What the alert's expression comes to on a steady flow of ``run``, from the run
    itself: each minute adds the same counts, so every windowed ratio is one run's ratio."""
    e = run.episodes
    if alert == "ExecViolationSpike":
        n = (e["trigger"] != "none").sum() + e["breaches"].sum() + \
            (decisions["guard_code"] >= guard.GUARD_FIRST_REJECT).sum()
        return 1000.0 * n / len(decisions)
    if alert == "ExecDecisionLatencyP95AboveSLO":
        return _quantile(0.95, decisions["latency_us"].to_numpy() / 1e3, LATENCY_BUCKETS_MS)
    if alert == "ExecISDegradationVsBaseline":
        return float((e["is_bps"] - run.shadow_twap["is_bps"]).mean())
    return float(e["finished_by"].isin(["fallback", "passive"]).mean())


def _render(template: str, value: float, labels: dict[str, str]) -> str:
    """The Go templates rules.yml uses: $labels.x, $value | printf, | humanizePercentage."""
    out = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], template)
    out = re.sub(r'\{\{ \$value \| printf "([^"]+)" \}\}', lambda m: m.group(1) % value, out)
    return out.replace("{{ $value | humanizePercentage }}", f"{value * 100:.4g}%")


EVAL_MINUTES = (10, 30, MINUTES)


def _steady(firing: dict[str, dict[str, str]], run, decisions) -> dict:
    """What a steady flow of ``run`` should fire at each of ``EVAL_MINUTES``: the alerts in
    ``firing`` (with their labels), the IS alert only after its 15m and the fallback alert
    after its 10m (at 10m both are at most pending)."""
    waits = ("ExecISDegradationVsBaseline", "ExecFallbackRateHigh")
    return {at: {a: (labels, _expected_value(a, run, decisions))
                 for a, labels in firing.items() if not (a in waits and at <= 10)}
            for at in EVAL_MINUTES}


def _case(name: str, series: list[dict], expect: dict[int, dict]) -> dict:
    """One promtool test group: at each of ``EVAL_MINUTES`` every alert asserted to be
    firing (``expect[minute][alert]``: its labels and value, checked through the rendered
    annotations) or silent."""
    rules = {r["alert"]: r for g in yaml.safe_load(RULES.read_text())["groups"]
             for r in g["rules"] if "alert" in r}
    tests = []
    for at in EVAL_MINUTES:
        for alert in ALERTS:
            exp = []
            if alert in expect[at]:
                labels, value = expect[at][alert]
                rule = rules[alert]
                exp = [{"exp_labels": {**rule["labels"], **labels},
                        "exp_annotations": {k: _render(v, value, labels)
                                            for k, v in rule["annotations"].items()}}]
            tests.append({"eval_time": f"{at}m", "alertname": alert, "exp_alerts": exp})
    return {"name": name, "interval": "1m", "input_series": series, "alert_rule_test": tests}


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    twap = make_baseline("twap", context_for(AC, AC_ORDER))
    return {
        "quiet": _run(twap, tmp, 32),
        # raises from its third decision: every order handed to the fallback
        "faulty": _run(_Scripted(good=2, fault="raises", name="faulty"), tmp, 32),
        # TWAP behind a slow model server (60 ms a decision)
        "slow": _run(_Slow(twap, 0.06), tmp, 4),
        # everything it may at every decision: far worse than TWAP, but within every limit
        "greedy": _run(_Scripted(action=4, name="greedy"), tmp, 32),
    }


def test_alert_rules_fire_on_recorded_metrics_and_only_then(scenarios, tmp_path):
    tool = _promtool()
    paired = {k: float((r.episodes["is_bps"] - r.shadow_twap["is_bps"]).mean())
              for k, (r, _) in scenarios.items()}
    # what the scenarios stand for, on these runs (a changed simulator says so here first)
    assert paired["quiet"] == paired["slow"] == 0.0
    assert abs(paired["faulty"]) < 3 and paired["greedy"] > 3
    assert (scenarios["faulty"][0].episodes["finished_by"] == "fallback").all()
    assert (scenarios["greedy"][0].episodes["trigger"] == "none").all()
    assert scenarios["slow"][1]["latency_us"].min() > 50e3
    assert scenarios["greedy"][1]["guard_code"].max() < guard.GUARD_FIRST_REJECT
    firing = {
        "quiet": {},
        "faulty": {"ExecViolationSpike": {}, "ExecFallbackRateHigh": {"policy": "faulty"}},
        "slow": {"ExecDecisionLatencyP95AboveSLO": {}},
        "greedy": {"ExecISDegradationVsBaseline": {"policy": "greedy", "baseline": "twap"}},
    }
    groups = [_case(k, _recorded([scenarios[k]] * (MINUTES + 1)),
                    _steady(firing[k], *scenarios[k])) for k in scenarios]
    # the faulty policy for 11 minutes, then the quiet one: the spike clears once the 5m
    # window has moved past it; the faulty policy's fallback rate over the hour stays at 100 %
    faulty, quiet = scenarios["faulty"], scenarios["quiet"]
    spike = _expected_value("ExecViolationSpike", *faulty)
    fell_back = ({"policy": "faulty"}, 1.0)
    groups.append(_case("recovered", _recorded([faulty] * 11 + [quiet] * (MINUTES - 10)), {
        10: {"ExecViolationSpike": ({}, spike)},
        30: {"ExecFallbackRateHigh": fell_back},
        MINUTES: {"ExecFallbackRateHigh": fell_back},
    }))
    rules = tmp_path / "rules.yml"
    shutil.copy(RULES, rules)
    test_file = tmp_path / "rules_test.yml"
    test_file.write_text(yaml.safe_dump({"rule_files": ["rules.yml"],
                                         "evaluation_interval": "1m", "tests": groups},
                                        sort_keys=False))
    out = subprocess.run([tool, "test", "rules", str(test_file)], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_mixed_policies_and_missing_labels_count_as_pandas_groups_them():
    """A hand-built run of two policies (rows interleaved, one without a policy), missing IS,
    fallback and passive finishers, a missing trigger and a shadow TWAP lacking one order:
    every count and gauge equals what pandas' groupby / value_counts give, and observing the
    run order by order (the service's one-row frames) gives the same samples."""
    from types import SimpleNamespace

    import pandas as pd

    e = pd.DataFrame({
        "order_idx": range(6),
        "policy": pd.array(["ppo", "twap", "ppo", None, "twap", "ppo"], dtype="str"),
        "is_bps": [10.0, -5.0, np.nan, 7.0, 30.0, 50.0],
        "steps": [10, 4, 6, 9, 8, 3], "child_orders": [5, 2, 3, 1, 4, 2],
        "guard_rejects": [0, 1, 0, 0, 2, 0], "breaches": [0, 0, 1, 0, 0, 0],
        "finished_by": pd.array(["fallback", "policy", "passive", "fallback", "fallback",
                                 "fallback"], dtype="str"),
        "trigger": pd.array(["latency", "none", "extreme_volatility", "latency", None,
                             "latency"], dtype="str"),
    })
    shadow = pd.DataFrame({"order_idx": [5, 0, 1, 2, 3], "is_bps": [40.0, 4.0, -1.0, 3.0, 2.0]})
    whole = ExecMetrics(tail_window=2)
    whole.observe_run(SimpleNamespace(episodes=e, shadow_twap=shadow))
    s = _samples(whole)
    has = e[e["policy"].notna()]
    for policy, rows in has.groupby("policy"):
        assert _value(s, "exec_orders_total", policy=policy) == len(rows)
        assert _value(s, "exec_decisions_total", policy=policy) == rows["steps"].sum()
        finite = rows["is_bps"].dropna().to_numpy()
        assert _value(s, "exec_is_bps_count", policy=policy) == finite.size
        assert _value(s, "exec_tail_cvar_bps", policy=policy) == cvar(finite[-2:])
        base = shadow.set_index("order_idx")["is_bps"].reindex(rows["order_idx"]).to_numpy()
        diff = rows["is_bps"].to_numpy() - base
        assert _value(s, "exec_is_vs_baseline_bps", policy=policy, baseline="twap") == \
            np.mean(diff[np.isfinite(diff)][-2:])
        taken = rows[rows["finished_by"].isin(["fallback", "passive"])]
        for trigger, n in taken["trigger"].value_counts().items():
            assert _value(s, "exec_fallback_total", policy=policy, trigger=trigger) == n
    assert not [k for k in s if k[0] == "exec_fallback_total" and ("trigger", "nan") in k[1]]
    assert _value(s, "exec_orders_total", policy="ppo") == 3  # the row without one is left out
    assert _value(s, "exec_fallback_total", policy="ppo", trigger="latency") == 2
    assert _value(s, "exec_fallback_total", policy="ppo", trigger="extreme_volatility") == 1
    assert _value(s, "exec_violations_total", kind="watchdog_latency") == 3
    assert _value(s, "exec_violations_total", kind="limit_breach") == 1
    assert _value(s, "exec_violations_total", kind="guard_reject") == 3
    by_order = ExecMetrics(tail_window=2)
    for i in range(len(e)):
        one = e.iloc[i : i + 1].reset_index(drop=True)
        by_order.observe_run(SimpleNamespace(episodes=one, shadow_twap=shadow))
    assert _samples(by_order) == s
