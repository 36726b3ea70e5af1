"""The policy registry: states and their legal moves, 4-eyes promotion to live, rollback to the
last green version, the fallback flag, the daily review's quarantine, the audit log, and
concurrent approvals, each on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

import registry_helpers
from execrl.agents.export import NumpyPolicy
from execrl.domain.errors import ExecRLError
from execrl.service.access import AccessDenied, User
from execrl.service.registry import (
    STATES,
    TRANSITIONS,
    Registry,
    RegistryError,
    fallback_flag,
    underperformance_streak,
)
from pg import postgres_url  # noqa: F401  (the fixture)
from registry_helpers import cheap_tokens, results_for, staffed

checkpoints = registry_helpers.checkpoints  # the fixtures
registry = registry_helpers.registry


def _hash(folder: Path) -> str:
    return NumpyPolicy.load(folder, checkpoint=True).policy_hash()


def _to_canary(reg: Registry, people: dict[str, User], folder: Path, scope: str = "*") -> str:
    digest = reg.register(people["quinn"], folder, scope=scope).policy_hash
    reg.promote(people["quinn"], digest)
    reg.promote(people["quinn"], digest)
    return digest


def _to_live(reg: Registry, people: dict[str, User], folder: Path, scope: str = "*") -> str:
    digest = _to_canary(reg, people, folder, scope)
    reg.request(people["quinn"], digest)
    assert not reg.approve(people["pam"], digest).promoted
    assert reg.approve(people["rita"], digest).promoted
    return digest


def _one_line(exc: pytest.ExceptionInfo[BaseException], *needles: str) -> None:
    text = str(exc.value)
    assert "\n" not in text and text
    for needle in needles:
        assert needle in text, (needle, text)


def test_register_keeps_hash_training_features_and_evaluation(registry, checkpoints, tmp_path):
    people = staffed(registry)
    digest = _hash(checkpoints[0])
    results = results_for(tmp_path / "results.json", "ppo", digest)
    rec = registry.register(people["quinn"], checkpoints[0], results, scope="XYZ")
    assert (rec.policy_hash, rec.state, rec.scope) == (digest, "candidate", "XYZ")
    config = json.loads((checkpoints[0] / "config.json").read_text())
    assert rec.training == config and rec.algo == "ppo"
    assert rec.features["names"] == list(NumpyPolicy.load(checkpoints[0]).observations)
    assert rec.evaluation["label"] == "ppo"
    assert rec.evaluation["comparisons"][0]["diff_bps_mean"] == -1.5
    assert registry.get(registry.resolve(digest[:8])) == rec
    with pytest.raises(RegistryError) as exc:
        registry.register(people["quinn"], checkpoints[0])
    _one_line(exc, digest[:12], "registered already", "candidate")
    # results that evaluate another policy are refused, and nothing is registered
    other = results_for(tmp_path / "other.json", "ppo", "0" * 64)
    with pytest.raises(RegistryError) as exc:
        registry.register(people["quinn"], checkpoints[1], other)
    _one_line(exc, "does not evaluate policy", _hash(checkpoints[1])[:12])
    assert [p.policy_hash for p in registry.policies()] == [digest]


def test_register_takes_the_results_json_execrl_evaluate_writes(checkpoints, tmp_path,
                                                              monkeypatch):
    from typer.testing import CliRunner

    from execrl.cli import app

    out = tmp_path / "eval"
    done = CliRunner().invoke(app, ["evaluate", "--policies", f"twap,ppo:{checkpoints[0]}",
                                    "--orders", "30", "--out", str(out), "--no-plots"])
    assert done.exit_code == 0, done.output
    cheap_tokens(monkeypatch)
    reg = Registry(f"sqlite:///{tmp_path / 'r.sqlite'}")
    people = staffed(reg)
    rec = reg.register(people["pam"], checkpoints[0], out / "results.json")
    results = json.loads((out / "results.json").read_text())
    assert rec.evaluation["metrics"] == results["policies"]["ppo"]
    assert rec.evaluation["comparisons"] == [c for c in results["comparisons"]
                                             if c["policy"] == "ppo"]


def test_the_lifecycle_to_live_and_its_audit_trail(registry, checkpoints):
    people = staffed(registry)
    digest = registry.register(people["quinn"], checkpoints[0], reason="trained").policy_hash
    assert registry.promote(people["quinn"], digest).state == "shadow"
    assert registry.promote(people["pam"], digest, reason="shadow ok").state == "canary"
    with pytest.raises(RegistryError) as exc:
        registry.promote(people["pam"], digest)
    _one_line(exc, "canary", "request", "2 approvals")
    req = registry.request(people["quinn"], digest, reason="canary green for a week")
    assert (req.status, req.approvers) == ("open", ())
    first = registry.approve(people["pam"], digest)
    assert not first.promoted and registry.get(digest).state == "canary"
    second = registry.approve(people["rob"], digest)
    assert second.promoted and second.request.status == "promoted"
    assert set(second.request.approvers) == {"pam", "rob"}
    assert registry.get(digest).state == "live"
    assert registry.live_policy("ANY").policy_hash == digest
    log = registry.events(digest)
    moves = [(e["actor"], e["action"], e["from_state"], e["to_state"]) for e in log]
    assert moves == [
        ("quinn", "register", "", "candidate"), ("quinn", "promote", "candidate", "shadow"),
        ("pam", "promote", "shadow", "canary"), ("quinn", "request", "canary", "live"),
        ("pam", "approve", "canary", "live"), ("rob", "approve", "canary", "live"),
        ("rob", "promote", "canary", "live")]
    assert log[0]["reason"] == "trained" and log[3]["reason"] == "canary green for a week"
    assert log[-1]["detail"]["approvers"] == ["pam", "rob"]
    assert all(e["at"] for e in log) and [e["seq"] for e in log] == sorted(e["seq"] for e in log)


def _in_every_state(reg: Registry, people: dict[str, User], folders: list[Path]
                    ) -> dict[str, str]:
    """One policy per state (scope ``*``): the first goes live then retired by the second."""
    quinn, pam = people["quinn"], people["pam"]
    retired = _to_live(reg, people, folders[0])
    live = _to_live(reg, people, folders[1])
    canary = _to_canary(reg, people, folders[2])
    shadow = reg.register(quinn, folders[3]).policy_hash
    reg.promote(quinn, shadow)
    quarantined = reg.register(quinn, folders[4]).policy_hash
    reg.quarantine(pam, quarantined, reason="test")
    candidate = reg.register(quinn, folders[5]).policy_hash
    states = {"candidate": candidate, "shadow": shadow, "canary": canary, "live": live,
              "retired": retired, "quarantined": quarantined}
    assert {s: reg.get(h).state for s, h in states.items()} == {s: s for s in states}
    return states


def test_every_illegal_move_is_refused_naming_the_state_and_the_action(registry, checkpoints):
    people = staffed(registry)
    pam = people["pam"]
    states = _in_every_state(registry, people, checkpoints)
    actions = {"promote": registry.promote, "quarantine": registry.quarantine,
               "release": registry.release}
    tried = 0
    for state, digest in states.items():
        for action, call in actions.items():
            target = TRANSITIONS[action].get(state)
            if target is not None and not (action == "promote" and target == "live"):
                continue
            before = registry.get(digest)
            with pytest.raises(RegistryError) as exc:
                call(pam, digest)
            if action == "promote" and target == "live":
                _one_line(exc, state, "request")
            else:
                _one_line(exc, f"is {state}", f"cannot {action}")
            assert registry.get(digest) == before
            tried += 1
    # promote from live / retired / quarantined and to live; quarantine x1; release x5
    assert tried == 10
    for state, digest in states.items():  # a request for live: from canary only
        if state == "canary":
            continue
        with pytest.raises(RegistryError) as exc:
            registry.request(people["quinn"], digest)
        _one_line(exc, f"is {state}", "only from canary")
    with pytest.raises(RegistryError) as exc:
        registry.request(people["quinn"], states["shadow"], target="canary")
    _one_line(exc, "needs no request")
    assert set(states) == set(STATES)


def test_one_live_policy_per_scope_and_routing_by_symbol(registry, checkpoints):
    people = staffed(registry)
    desk = _to_live(registry, people, checkpoints[0])
    xyz = _to_live(registry, people, checkpoints[1], scope="XYZ")
    assert registry.live_policy("XYZ").policy_hash == xyz
    assert registry.live_policy("ABC").policy_hash == desk
    newer = _to_live(registry, people, checkpoints[2])
    assert registry.get(desk).state == "retired" and registry.get(xyz).state == "live"
    assert registry.live_policy("ABC").policy_hash == newer
    assert [p.policy_hash for p in registry.policies(state="live", scope="*")] == [newer]
    # the database holds the rule even against a direct write
    with registry.engine.begin() as conn, pytest.raises(sa.exc.IntegrityError):
        conn.execute(sa.text("UPDATE registry_policies SET state = 'live' "
                             "WHERE policy_hash = :h"), {"h": desk})


def test_rollback_reinstates_the_last_green_version(registry, checkpoints):
    people = staffed(registry)
    rita = people["rita"]
    v1 = _to_live(registry, people, checkpoints[0])
    v2 = _to_live(registry, people, checkpoints[1])
    v3 = _to_live(registry, people, checkpoints[2])
    assert registry.rollback(rita, "*", reason="IS up 4 bps") == (v3, v2)
    assert [registry.get(h).state for h in (v1, v2, v3)] == ["retired", "live", "quarantined"]
    registry.quarantine(rita, v1, reason="bad too")  # no longer green
    with pytest.raises(RegistryError) as exc:
        registry.rollback(rita, "*")
    _one_line(exc, "no green version", v2[:12])
    assert registry.get(v2).state == "live"
    last = registry.events()[-1]
    assert (last["actor"], last["action"], last["to_state"]) == ("rita", "quarantine",
                                                                 "quarantined")
    rollbacks = [e for e in registry.events() if e["action"] == "rollback"]
    assert [(e["policy_hash"], e["from_state"], e["to_state"], e["reason"])
            for e in rollbacks] == [(v3, "live", "quarantined", "IS up 4 bps"),
                                    (v2, "retired", "live", "IS up 4 bps")]


def test_four_eyes_self_approval_and_repeat_approval_are_refused(registry, checkpoints):
    people = staffed(registry)
    pam, paul, rita = people["pam"], people["paul"], people["rita"]
    digest = _to_canary(registry, people, checkpoints[0])
    req = registry.request(pam, digest)  # a PM may request; then not approve it
    with pytest.raises(AccessDenied) as exc:
        registry.approve(pam, digest)
    _one_line(exc, "'pam'", "requester cannot approve", "4-eyes")
    assert not registry.approve(paul, digest).promoted
    with pytest.raises(AccessDenied) as exc:
        registry.approve(paul, digest)
    _one_line(exc, "'paul'", "already", "someone else")
    with pytest.raises(RegistryError) as exc:
        registry.request(people["quinn"], digest)
    _one_line(exc, f"open request {req.request_id}")
    assert registry.get(digest).state == "canary"
    assert registry.approve(rita, digest).promoted
    assert registry.requests(digest)[0].approvers == ("paul", "rita")


def test_an_approval_expires_when_the_policy_changes_state(registry, checkpoints):
    people = staffed(registry)
    quinn, pam, rita, rob = people["quinn"], people["pam"], people["rita"], people["rob"]
    digest = _to_canary(registry, people, checkpoints[0])
    first = registry.request(quinn, digest)
    registry.approve(pam, digest)
    registry.quarantine(rita, digest, reason="latency")
    assert registry.requests(digest)[0].status == "expired"
    with pytest.raises(RegistryError) as exc:
        registry.approve(rob, digest)
    _one_line(exc, f"request {first.request_id}", "expired", "quarantined")
    registry.release(rita, digest)
    registry.promote(quinn, digest)
    registry.promote(quinn, digest)
    registry.request(quinn, digest)
    # pam's approval was for the first request: one approval now is not two
    assert not registry.approve(rob, digest).promoted
    assert registry.get(digest).state == "canary"
    assert registry.approve(pam, digest).promoted


def test_an_approver_who_lost_the_role_no_longer_counts(registry, checkpoints):
    people = staffed(registry)
    digest = _to_canary(registry, people, checkpoints[0])
    registry.request(people["quinn"], digest)
    registry.approve(people["pam"], digest)
    registry.deactivate(people["ada"], "pam", reason="left the desk")
    assert not registry.approve(people["rita"], digest).promoted
    with pytest.raises(AccessDenied) as exc:  # the stale User object is re-read
        registry.approve(people["pam"], digest)
    _one_line(exc, "'pam'", "deactivated")
    assert registry.approve(people["rob"], digest).promoted


def test_the_fallback_flag_for_one_policy_or_all(registry, checkpoints):
    people = staffed(registry)
    tina, rita = people["tina"], people["rita"]
    live = _to_live(registry, people, checkpoints[0])
    canary = _to_canary(registry, people, checkpoints[1])
    cand = registry.register(people["quinn"], checkpoints[2]).policy_hash
    assert [registry.fallback_flag(h) for h in (live, canary, cand, "f" * 64)] == [
        False, False, True, True]
    registry.set_flag(tina, live, True, reason="runbook step 1")  # a trader may pull it
    assert registry.fallback_flag(live) and not registry.fallback_flag(canary)
    with pytest.raises(AccessDenied) as exc:  # ... but not hand the flow back
        registry.set_flag(tina, live, False)
    _one_line(exc, "'tina'", "unflag")
    registry.set_flag(rita, live, False, reason="venue back")
    assert not registry.fallback_flag(live)
    registry.set_flag(rita, "*", True, reason="market halt")
    assert registry.fallback_flag(live) and registry.fallback_flag(canary)
    assert fallback_flag(live, registry.url)  # what the service calls
    registry.set_flag(rita, "*", False)
    assert not fallback_flag(live, registry.url)
    registry.quarantine(rita, live, reason="x")
    assert registry.fallback_flag(live)
    flips = [(e["actor"], e["action"], e["policy_hash"], e["from_state"], e["to_state"])
             for e in registry.events() if e["action"] in ("flag", "unflag")]
    assert flips == [("tina", "flag", live, "policy", "fallback"),
                     ("rita", "unflag", live, "fallback", "policy"),
                     ("rita", "flag", "*", "policy", "fallback"),
                     ("rita", "unflag", "*", "fallback", "policy")]
    with pytest.raises(RegistryError) as exc:
        registry.set_flag(rita, "0" * 64, True)
    _one_line(exc, "not registered")


def _days(marks: str) -> list[dict]:
    """'+' a day worse than TWAP beyond its CI, '-' better, '0' CI across zero, '?' no CI."""
    ci = {"+": [0.5, 3.0], "-": [-3.0, -0.5], "0": [-1.0, 2.0], "?": None}
    mean = {"+": 1.5, "-": -1.5, "0": 0.5, "?": 4.0}
    return [{"day": f"2026-11-{i + 1:02d}", "diff_bps_mean": mean[m], "ci95": ci[m]}
            for i, m in enumerate(marks)]


@pytest.mark.parametrize(("marks", "fires"), [
    ("+++++", True), ("-++++0+++++-", True), ("++++", False), ("++++0++++", False),
    ("++++?++++", False), ("-+-+-+-+-+", False), ("", False), ("?????", False)])
def test_underperformance_streak_is_five_consecutive_days_worse_than_twap(marks, fires):
    streak = underperformance_streak(_days(marks))
    assert (streak is not None) == fires
    if fires:
        first = marks.index("+++++")
        assert [d.day for d in streak] == [f"2026-11-{first + i + 1:02d}" for i in range(5)]


def test_daily_results_are_checked(registry):
    rows = _days("+++")
    for bad, needle in [({**rows[1], "diff_bps_mean": float("nan")}, "diff_bps_mean"),
                        ({**rows[1], "ci95": [2.0, 1.0]}, "ci95"),
                        ({**rows[1], "ci95": [1.0]}, "ci95"),
                        ({**rows[1], "day": "2026-10-01"}, "not in day order")]:
        with pytest.raises(RegistryError) as exc:
            underperformance_streak([rows[0], bad, rows[2]])
        _one_line(exc, needle)


def test_the_daily_review_quarantines_a_live_policy_and_hands_its_flow_to_the_fallback(
    registry, checkpoints
):
    people = staffed(registry)
    live = _to_live(registry, people, checkpoints[0])
    assert registry.review(live, _days("++++0++++")) is None
    assert registry.get(live).state == "live" and not registry.fallback_flag(live)
    streak = registry.review(live, _days("-+++++"))
    assert [d.day for d in streak] == [f"2026-11-0{i}" for i in range(2, 7)]
    assert registry.get(live).state == "quarantined"
    assert registry.fallback_flag(live) and registry.live_policy("XYZ") is None
    event = registry.events(live)[-1]
    assert (event["actor"], event["action"], event["from_state"]) == ("system", "quarantine",
                                                                      "live")
    assert "5 consecutive days" in event["reason"] and len(event["detail"]["days"]) == 5
    with pytest.raises(RegistryError) as exc:
        registry.review(live, _days("+++++"))
    _one_line(exc, "quarantined", "live policies only")


def _race(calls) -> list[BaseException | object]:
    """Run the calls at once (each on its own thread and connection)."""
    barrier = threading.Barrier(len(calls))
    out: list[BaseException | object] = [None] * len(calls)

    def run(i, call):
        barrier.wait()
        try:
            out[i] = call()
        except BaseException as exc:
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_concurrent_approvals_promote_once(registry, checkpoints):
    people = staffed(registry)
    approvers = [people[n] for n in ("pam", "paul", "rita", "rob")]
    for folder in checkpoints[:2]:
        digest = _to_canary(registry, people, folder)
        registry.request(people["quinn"], digest)
        outcomes = _race([lambda u=u, d=digest: registry.approve(u, d) for u in approvers])
        promoted = [o for o in outcomes if not isinstance(o, BaseException) and o.promoted]
        refused = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(promoted) == 1 and len(refused) == 2, outcomes
        assert all(isinstance(e, RegistryError) and "no open request" in str(e)
                   for e in refused), refused
        assert len(registry.requests(digest)[-1].approvers) == 2
        moves = [e for e in registry.events(digest) if e["action"] == "promote"
                 and e["to_state"] == "live"]
        assert len(moves) == 1 and registry.get(digest).state == "live"
    assert len(registry.policies(state="live")) == 1


def test_two_policies_racing_to_live_in_one_scope_leave_one_live(registry, checkpoints):
    people = staffed(registry)
    pair = [_to_canary(registry, people, f) for f in checkpoints[:2]]
    for digest in pair:
        registry.request(people["quinn"], digest)
        registry.approve(people["pam"], digest)
    outcomes = _race([lambda d=d: registry.approve(people["rita"], d) for d in pair])
    states = sorted(registry.get(d).state for d in pair)
    assert len(registry.policies(state="live")) == 1
    # serialised: both win in turn (the later retires the earlier); or the database refused one
    assert states in (["live", "retired"], ["canary", "live"]), (states, outcomes)


def test_two_connections_cannot_both_move_one_state(registry, checkpoints):
    """The conditional update by hand: two transactions read the same state sequence number;
    the one that writes second changes nothing."""
    people = staffed(registry)
    digest = registry.register(people["quinn"], checkpoints[0]).policy_hash
    table = sa.table("registry_policies", sa.column("policy_hash"), sa.column("state"),
                     sa.column("state_seq"))
    seq = registry.get(digest).state_seq
    update = (table.update().where(table.c.policy_hash == digest, table.c.state_seq == seq)
              .values(state="shadow", state_seq=seq + 1))
    with registry.engine.begin() as first:
        assert first.execute(update).rowcount == 1
    with registry.engine.begin() as second:
        assert second.execute(update).rowcount == 0
    assert registry.get(digest).state_seq == seq + 1


def test_the_registry_opens_an_existing_database_again(tmp_path, checkpoints, monkeypatch):
    cheap_tokens(monkeypatch)
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    reg = Registry(url)
    people = staffed(reg)
    digest = reg.register(people["quinn"], checkpoints[0]).policy_hash
    reg.close()
    again = Registry(url)
    assert again.get(digest).state == "candidate" and len(again.users()) == len(people)


@pytest.mark.parametrize("url", ["nonsense://", "not a url", "sqlite:////no/such/dir/r.db"])
def test_a_bad_database_url_is_one_line(url):
    with pytest.raises(ExecRLError) as exc:
        Registry(url)
    _one_line(exc, url.split(":")[0] if "no/such" not in url else "/no/such/dir")


def test_reads_do_not_wait_for_a_change_in_progress(tmp_path, checkpoints, monkeypatch):
    """SQLite: a change holds the write lock from its first read, but the service's
    ``fallback_flag`` (a read) does not queue behind it."""
    cheap_tokens(monkeypatch)
    reg = Registry(f"sqlite:///{tmp_path / 'r.sqlite'}")
    people = staffed(reg)
    digest = reg.register(people["quinn"], checkpoints[0]).policy_hash
    with reg._tx() as conn:  # a change in progress, not committed
        conn.execute(sa.text("UPDATE registry_policies SET state = 'shadow'"))
        assert reg.fallback_flag(digest) is True  # still the committed candidate
        assert reg.get(digest).state == "candidate"
    assert reg.fallback_flag(digest) is False
