"""The HTTP API (execrl.service.api) on a real Redis and a registry on SQLite: every route's
happy path; every (role, action) the permission table forbids refused with 403 naming both,
changing nothing; no / a bad token 401; a bad order 422 naming the field; 4-eyes through the
API; orders placed over HTTP run by the real service, its tape, orders and panels read back
against the streams."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from console_world import service, wait_for
from execrl.domain import ParentOrder
from execrl.service import access
from execrl.service.access import ROLES
from execrl.service.registry import Registry
from execrl.service.streams import (
    STREAM_FILLS,
    STREAM_ORDERS,
    STREAM_RESEARCH,
    decode,
    decode_order,
)
from redis_server import redis_url  # noqa: F401  (the fixture)
from registry_helpers import PEOPLE, make_checkpoint

redis = pytest.importorskip("redis")
fastapi_testclient = pytest.importorskip("fastapi.testclient")

from execrl.service.api import (  # noqa: E402  (after the skip: fastapi is optional here)
    API_ACTIONS,
    API_PERMISSIONS,
    CSRF_HEADER,
    ORDER_ACTION,
    create_app,
)

#: one person per role (from registry_helpers.PEOPLE) and a second PM / risk officer
BY_ROLE = {"trader": "tina", "quant": "quinn", "pm": "pam", "risk_officer": "rita",
           "admin": "ada"}


def _order(i: int, **kw) -> dict:
    return {"order_id": f"H-{i}", "symbol": "DEMO", "side": "sell" if i % 2 else "buy",
            "qty": 40_000 + 1_000 * i, "arrival_px": 50.0, "start_ts": 9 * 3600 + 1800 * i,
            "horizon_s": 3600, **kw}


def _staff(reg: Registry) -> dict[str, str]:
    tokens = {"ada": reg.add_user(None, "ada", "admin")}
    ada = reg.user("ada")
    for name, role in PEOPLE.items():
        if name != "ada":
            tokens[name] = reg.add_user(ada, name, role)
    return tokens


def _world(reg: Registry, folders) -> dict[str, str]:
    """A live policy (and a retired one to roll back to), a canary with an open request by
    quinn, a bare canary, a quarantined one and a candidate (as test_access builds it)."""
    quinn, pam, rita = reg.user("quinn"), reg.user("pam"), reg.user("rita")

    def to_canary(folder):
        digest = reg.register(quinn, folder).policy_hash
        reg.promote(quinn, digest)
        reg.promote(quinn, digest)
        return digest

    old = to_canary(folders[0])
    for digest in (old, live := to_canary(folders[1])):
        reg.request(quinn, digest)
        reg.approve(pam, digest)
        reg.approve(rita, digest)
    requested = to_canary(folders[2])
    reg.request(quinn, requested)
    quarantined = reg.register(quinn, folders[3]).policy_hash
    reg.quarantine(rita, quarantined, reason="x")
    return {"live": live, "retired": old, "requested": requested, "quarantined": quarantined,
            "candidate": reg.register(quinn, folders[4]).policy_hash,
            "canary": to_canary(folders[5]), "folder": str(folders[6])}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("api-checkpoints")
    return [make_checkpoint(root / f"ck{i}", seed=30 + i) for i in range(8)]


@pytest.fixture(scope="module")
def rclient(redis_url):  # noqa: F811
    c = redis.Redis.from_url(redis_url, decode_responses=True)
    yield c
    c.close()


def _setup(tmp_path, folders, rclient):
    reg = Registry(f"sqlite:///{tmp_path / 'registry.sqlite'}")
    tokens = _staff(reg)
    world = _world(reg, folders)
    app = create_app(rclient, reg, block_ms=100)
    return reg, tokens, world, app


@pytest.fixture(scope="module")
def shared(tmp_path_factory, folders, rclient):
    """One world for the refusals (a refusal changes nothing, so they can share it)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(access, "SCRYPT_COST", (16, 8, 1))
        reg, tokens, world, app = _setup(tmp_path_factory.mktemp("api-shared"), folders,
                                         rclient)
        with fastapi_testclient.TestClient(app) as http:
            yield reg, tokens, world, http
    reg.close()


@pytest.fixture
def fresh(tmp_path, folders, rclient, monkeypatch):
    """A world of its own, for the tests that change it."""
    monkeypatch.setattr(access, "SCRYPT_COST", (16, 8, 1))
    rclient.flushall()
    reg, tokens, world, app = _setup(tmp_path, folders, rclient)
    with fastapi_testclient.TestClient(app) as http:
        yield reg, tokens, world, http
    reg.close()


def _auth(tokens, name):
    return {"Authorization": f"Bearer {tokens[name]}"}


def _attempt(world, action):
    """(method, path, json body) that asks for ``action``."""
    return {
        "view": ("GET", "/api/policies", None),
        ORDER_ACTION: ("POST", "/api/orders", _order(99)),
        "register": ("POST", "/api/policies", {"path": world["folder"]}),
        "promote": ("POST", f"/api/policies/{world['candidate']}/promote", {}),
        "request": ("POST", f"/api/policies/{world['canary']}/request", {}),
        "approve": ("POST", f"/api/policies/{world['requested']}/approve", {}),
        "rollback": ("POST", "/api/rollback", {"scope": "*", "reason": "x"}),
        "quarantine": ("POST", f"/api/policies/{world['live']}/quarantine", {"reason": "x"}),
        "release": ("POST", f"/api/policies/{world['quarantined']}/release", {"reason": "x"}),
        "flag": ("POST", "/api/flags", {"target": world["live"], "fallback": True,
                                        "reason": "x"}),
        "unflag": ("POST", "/api/flags", {"target": world["live"], "fallback": False,
                                          "reason": "x"}),
        "users": ("POST", "/api/users", {"name": "newcomer", "role": "trader"}),
    }[action]


FORBIDDEN = [(r, a) for r in ROLES for a in API_ACTIONS if a not in API_PERMISSIONS[r]]


def test_the_api_permission_table():
    assert set(API_ACTIONS) == {*access.ACTIONS, ORDER_ACTION}
    for role in ROLES:  # the registry's own table, plus who places orders
        assert API_PERMISSIONS[role] - {ORDER_ACTION} == access.PERMISSIONS[role]
    assert {r for r in ROLES if ORDER_ACTION in API_PERMISSIONS[r]} == {"trader", "pm"}
    assert len(FORBIDDEN) >= 30


@pytest.mark.parametrize(("role", "action"), FORBIDDEN)
def test_every_forbidden_action_is_refused_over_http(shared, rclient, role, action):
    reg, tokens, world, http = shared
    before = (len(reg.events()), rclient.xlen(STREAM_ORDERS), reg.flags(),
              [(p.policy_hash, p.state) for p in reg.policies()])
    method, path, body = _attempt(world, action)
    r = http.request(method, path, json=body, headers=_auth(tokens, BY_ROLE[role]))
    assert r.status_code == 403, r.text
    err = r.json()
    assert err["action"] == action and err["role"] == role
    line = err["error"]
    assert line.startswith("error: ") and "\n" not in line
    assert f"({role}) may not {action}" in line
    after = (len(reg.events()), rclient.xlen(STREAM_ORDERS), reg.flags(),
             [(p.policy_hash, p.state) for p in reg.policies()])
    assert after == before  # nothing written


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/policies"), ("GET", "/api/tape"), ("GET", "/api/stream"),
    ("POST", "/api/orders"), ("POST", "/api/flags"), ("GET", "/api/users")])
def test_no_token_or_a_bad_one_is_401(shared, method, path):
    _, tokens, _, http = shared
    body = {"target": "*", "fallback": True, "reason": "x"} if path == "/api/flags" else None
    for headers, needle in (({}, "not logged in"),
                            ({"Authorization": "Bearer 0123456789abcdef.wrong"},
                             "token is not valid"),
                            ({"Authorization": "Bearer garbage"}, "token is malformed"),
                            ({"Authorization": f"Basic {tokens['pam']}"}, "Bearer"),
                            ({"Cookie": "execrl_session=forged"}, "session expired")):
        http.cookies.clear()
        r = http.request(method, path, json=body, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
        assert needle in r.json()["error"] and "\n" not in r.json()["error"]


def test_a_bad_order_is_422_naming_the_field_and_nothing_is_sent(shared, rclient):
    _, tokens, _, http = shared
    n = rclient.xlen(STREAM_ORDERS)
    h = _auth(tokens, "tina")
    for body, needle in (({**_order(1), "qty": -5}, "field 'qty'"),
                         ({k: v for k, v in _order(1).items() if k != "symbol"},
                          "field 'symbol' is missing"),
                         ({**_order(1), "side": "short"}, "field 'side'"),
                         ({**_order(1), "colour": "red"}, "colour")):
        r = http.post("/api/orders", json=body, headers=h)
        assert r.status_code == 422, r.text
        assert needle in r.json()["error"] and r.json()["action"] == ORDER_ACTION
    r = http.post("/api/orders", content=b"{not json", headers=h)
    assert r.status_code == 422 and r.json()["error"].startswith("error: ")
    assert rclient.xlen(STREAM_ORDERS) == n


def test_console_session_cookie_needs_its_csrf_token(shared):
    reg, tokens, world, http = shared
    http.cookies.clear()
    r = http.post("/api/login", json={"user": "pam", "token": "0123456789abcdef.nope"})
    assert r.status_code == 401
    r = http.post("/api/login", json={"user": "rita", "token": tokens["pam"]})
    assert r.status_code == 401  # someone else's token
    r = http.post("/api/login", json={"user": "tina", "token": tokens["tina"]})
    assert r.status_code == 200, r.text
    me = r.json()
    assert me["user"] == "tina" and me["role"] == "trader" and me["csrf"]
    assert "order" in me["permissions"] and "approve" not in me["permissions"]
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert http.get("/api/me").json()["csrf"] == me["csrf"]
    bad = {"target": world["live"], "fallback": True, "reason": "x"}
    r = http.post("/api/flags", json=bad)  # a cookie alone cannot change anything
    assert r.status_code == 403 and CSRF_HEADER in r.json()["error"]
    r = http.post("/api/flags", json=bad, headers={CSRF_HEADER: "forged"})
    assert r.status_code == 403
    assert not reg.flags().get(world["live"])
    assert http.post("/api/logout").status_code == 200
    http.cookies.clear()
    assert http.get("/api/me").status_code == 401


def test_the_registry_over_http_with_4_eyes(fresh, tmp_path):
    reg, tokens, w, http = fresh

    def post(name, path, body=None):
        return http.post(path, json=body or {}, headers=_auth(tokens, name))

    got = http.get("/api/policies", headers=_auth(tokens, "tina")).json()
    states = {p["policy_hash"]: p["state"] for p in got["policies"]}
    assert states[w["live"]] == "live" and states[w["canary"]] == "canary"
    req = {p["policy_hash"]: p["request"] for p in got["policies"]}[w["requested"]]
    assert req["requested_by"] == "quinn" and req["approvers"] == []
    # the quant registers and promotes; promotion to live needs a request
    r = post("quinn", "/api/policies", {"path": w["folder"], "reason": "nightly"})
    assert r.status_code == 201 and r.json()["policy"]["state"] == "candidate"
    new = r.json()["policy"]["policy_hash"]
    assert post("quinn", f"/api/policies/{new[:10]}/promote").json()["policy"]["state"] \
        == "shadow"
    r = post("quinn", f"/api/policies/{w['canary']}/promote")
    assert r.status_code == 409 and "needs a request" in r.json()["error"]
    # a PM who requests cannot approve their own request alone
    assert post("pam", f"/api/policies/{w['canary']}/request", {"reason": "r"}).status_code \
        == 200
    r = post("pam", f"/api/policies/{w['canary']}/approve")
    assert r.status_code == 403 and "requester cannot approve" in r.json()["error"]
    assert r.json()["role"] == "pm"
    # quinn's request: pam approves (one of two), twice is refused, rita's makes it live
    r = post("pam", f"/api/policies/{w['requested']}/approve", {"reason": "ok"})
    assert r.status_code == 200 and not r.json()["promoted"] and r.json()["state"] == "canary"
    r = post("pam", f"/api/policies/{w['requested']}/approve")
    assert r.status_code == 403 and "already" in r.json()["error"]
    r = post("rita", f"/api/policies/{w['requested']}/approve", {"reason": "ok"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["promoted"] and body["state"] == "live" and body["retired"] == w["live"]
    assert body["request"]["approvers"] == ["pam", "rita"]
    assert reg.get(w["requested"]).state == "live"
    reqs = http.get("/api/requests", headers=_auth(tokens, "ada")).json()["requests"]
    assert {r["status"] for r in reqs if r["policy_hash"] == w["requested"]} == {"promoted"}
    # the flag: a trader sends it to the fallback, needs a reason, cannot hand it back
    r = post("tina", "/api/flags", {"target": w["requested"], "fallback": True})
    assert r.status_code == 422 and "'reason'" in r.json()["error"]
    r = post("tina", "/api/flags", {"target": w["requested"], "fallback": True,
                                    "reason": "IS spike"})
    assert r.status_code == 200 and r.json()["flags"][w["requested"]] is True
    assert reg.fallback_flag(w["requested"])
    assert post("tina", "/api/flags", {"target": w["requested"], "fallback": False,
                                       "reason": "x"}).status_code == 403
    assert post("rita", "/api/flags", {"target": w["requested"], "fallback": False,
                                       "reason": "fixed"}).status_code == 200
    assert post("rita", "/api/flags", {"target": "*", "fallback": True, "reason": "drill"}
                ).json()["flags"]["*"] is True
    assert http.get("/api/flags", headers=_auth(tokens, "quinn")).json()["flags"] == \
        {w["requested"]: False, "*": True}
    pol = http.get("/api/policies", headers=_auth(tokens, "quinn")).json()
    assert pol["all_fallback"] and all(p["fallback"] for p in pol["policies"])
    # rollback, quarantine, release
    r = post("rita", "/api/rollback", {"scope": "*", "reason": "bad day"})
    assert r.status_code == 200
    assert r.json() == {"quarantined": w["requested"], "reinstated": w["live"]}
    r = post("pam", f"/api/policies/{w['quarantined']}/release", {"reason": "fixed"})
    assert r.json()["policy"]["state"] == "candidate"
    r = post("pam", f"/api/policies/{w['candidate']}/quarantine", {"reason": "bad data"})
    assert r.json()["policy"]["state"] == "quarantined"
    r = post("pam", f"/api/policies/{w['candidate']}/quarantine", {"reason": "again"})
    assert r.status_code == 409 and "cannot quarantine" in r.json()["error"]
    r = post("pam", "/api/policies/abcdef123456/quarantine", {"reason": "x"})
    assert r.status_code == 404 and "is not registered" in r.json()["error"]
    r = post("pam", "/api/policies/xyz/quarantine", {"reason": "x"})
    assert r.status_code == 422 and "not a policy hash" in r.json()["error"]
    # the audit log says who did what, newest first
    ev = http.get("/api/events", headers=_auth(tokens, "tina")).json()["events"]
    assert ev[0]["action"] == "quarantine" and ev[0]["actor"] == "pam"
    mine = http.get(f"/api/events?policy={w['requested'][:8]}",
                    headers=_auth(tokens, "tina")).json()["events"]
    assert {("pam", "approve"), ("rita", "approve"), ("rita", "promote"), ("tina", "flag"),
            ("rita", "rollback")} <= {(e["actor"], e["action"]) for e in mine}
    # users: the admin's
    r = post("ada", "/api/users", {"name": "newbie", "role": "trader"})
    assert r.status_code == 201 and reg.authenticate(r.json()["token"]).name == "newbie"
    assert post("ada", "/api/users", {"name": "newbie", "role": "trader"}).status_code == 409
    names = {u["name"] for u in http.get("/api/users", headers=_auth(tokens, "ada")
                                         ).json()["users"]}
    assert names == {*PEOPLE, "newbie"}


def test_a_deactivated_user_is_refused_at_once(fresh):
    reg, tokens, _, http = fresh
    h = _auth(tokens, "tina")
    assert http.get("/api/policies", headers=h).status_code == 200  # token now cached
    reg.deactivate(reg.user("ada"), "tina", reason="left the desk")
    r = http.get("/api/policies", headers=h)
    assert r.status_code == 403 and "deactivated" in r.json()["error"]


def test_orders_over_http_run_by_the_service_and_read_back(fresh, rclient):
    _, tokens, _, http = fresh
    h = _auth(tokens, "tina")
    orders = [_order(i) for i in range(1, 4)]
    for o in orders:
        r = http.post("/api/orders", json=o, headers=h)
        assert r.status_code == 201, r.text
        assert r.json()["placed_by"] == "tina"
    entries = rclient.xrange(STREAM_ORDERS)
    assert [decode_order(f) for _, f in entries] == [ParentOrder.from_dict(o) for o in orders]
    queued = wait_for(lambda: (got := http.get("/api/orders", headers=h).json()["orders"])
                      and len(got) == 3 and got, what="the orders on the console")
    assert {o["state"] for o in queued} <= {"queued", "working"}
    with service(rclient, step_s=0.005):
        wait_for(lambda: all(o["state"] == "done" for o in
                             http.get("/api/orders", headers=h).json()["orders"]),
                 timeout=60, what="the orders done")
    fills = [decode(f) for _, f in rclient.xrange(STREAM_FILLS)]
    traces = {(m["parent_id"], m["step"]): m for m in
              (decode(f) for _, f in rclient.xrange(STREAM_RESEARCH))}
    done = {m["parent_id"]: m for m in fills if m["kind"] == "done"}
    got = {o["order_id"]: o for o in http.get("/api/orders", headers=h).json()["orders"]}
    for oid, d in done.items():
        assert got[oid]["is_bps"] == d["is_bps"] and got[oid]["filled"] == d["filled"]
        assert got[oid]["finished_by"] == d["finished_by"]
    # the tape: every STREAM_FILLS entry once, in order, each child joined with its trace
    tape = http.get("/api/tape?after=0&limit=5000", headers=h).json()
    rows = [r for r in tape["rows"] if r["kind"] != "order"]
    assert [r["entry_id"] for r in rows] == [i for i, _ in rclient.xrange(STREAM_FILLS)]
    assert [r["seq"] for r in tape["rows"]] == list(range(1, tape["seq"] + 1))
    for r in rows:
        if r["kind"] in ("child", "fill"):
            assert r["action"] == traces[(r["parent_id"], r["step"])]["action"]
    assert {r["kind"] for r in tape["rows"]} >= {"order", "child", "fill", "done"}
    later = http.get(f"/api/tape?after={tape['seq'] - 3}", headers=h).json()["rows"]
    assert [r["seq"] for r in later] == [tape["seq"] - 2, tape["seq"] - 1, tape["seq"]]
    # the panels, recomputed here from the streams
    an = http.get("/api/analytics?bin_min=60", headers=h).json()
    by_hour: dict[tuple[str, int], list[float]] = {}
    for o in orders:
        hour = int(o["start_ts"] % 86400 // 3600)
        for row in (f"DEMO {o['side']}", "ALL"):
            by_hour.setdefault((row, hour), []).append(done[o["order_id"]]["is_bps"])
    cells = {(c["row"], c["bin"]): c for c in an["heatmap"]["cells"]}
    assert set(cells) == set(by_hour)
    for key, v in by_hour.items():
        assert cells[key]["n"] == len(v)
        assert cells[key]["mean_bps"] == pytest.approx(float(np.mean(v)), rel=1e-12)
    lat = [(t["ts_ns"] - t["market_ts_ns"]) / 1e6 for t in traces.values()]
    assert an["latency"]["n"] == len(lat) == an["orders"]["decisions"]
    assert an["latency"]["p95"] == pytest.approx(float(np.quantile(lat, 0.95)))
    assert an["confidence"]["decisions"] == len(traces)
    assert an["confidence"]["n"] == sum(1 for t in traces.values()
                                        if t.get("confidence") is not None)
    fb = an["fallback"]
    assert fb["n_policy"] + fb["n_fallback"] == len(done)
    assert fb["n_fallback"] == sum(1 for d in done.values() if d["finished_by"] != "policy")
    drift = an["drift"]["series"]
    assert [p["parent_id"] for p in drift] == sorted(done, key=lambda k: done[k]["ts_ns"])
    assert drift[-1]["mean_bps"] == pytest.approx(np.mean([d["is_bps"] for d in done.values()]))
    assert http.get("/api/analytics?bin_min=7", headers=h).status_code == 422
    # live: the stream replays from a cursor, each event's id its row's sequence number
    with http.stream("GET", "/api/stream?after=2&limit=4", headers=h) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    events = [dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
              for block in text.split("\n\n") if block.strip()]
    tape_events = [e for e in events if e.get("event") == "tape"]
    assert events[0]["event"] == "hello"
    assert [int(e["id"]) for e in tape_events] == [3, 4, 5, 6]
    assert [json.loads(e["data"])["seq"] for e in tape_events] == [3, 4, 5, 6]
    with http.stream("GET", "/api/stream?limit=1", headers={**h, "Last-Event-ID": "7"}) as r:
        text = "".join(r.iter_text())
    assert [line for line in text.splitlines() if line.startswith("id: ")] == ["id: 8"]


def test_the_console_is_served_with_a_strict_policy(shared):
    _, _, _, http = shared
    r = http.get("/")
    assert r.status_code == 200 and "execution console" in r.text
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    for asset in ("app.js", "style.css"):
        assert http.get(f"/{asset}").status_code == 200
    page = r.text + http.get("/app.js").text + http.get("/style.css").text
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page  # nothing fetched from outside
    assert http.get("/api/health").json()["ok"] is True


def test_execrl_console_refuses_bad_options_in_one_line(redis_url, tmp_path):  # noqa: F811
    from typer.testing import CliRunner

    from execrl.cli import app

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    runner = CliRunner()
    reg = f"sqlite:///{tmp_path / 'r.sqlite'}"
    try:
        for args, needle in ((["--redis", "http://x"], "--redis 'http://x'"),
                             (["--redis", "redis://127.0.0.1:1/0"], "cannot reach"),
                             (["--redis", redis_url, "--registry", "nosuchdb://x"],
                              "registry URL"),
                             (["--redis", redis_url, "--registry", reg, "--port", str(port)],
                              f"--port {port}"),
                             (["--redis", redis_url, "--registry", reg, "--host",
                               "no-such-host.invalid"], "--host")):
            result = runner.invoke(app, ["console", *args])
            assert result.exit_code == 2, (args, result.output)
            text = result.output.strip()
            assert text.startswith("error: ") and needle in text and "Traceback" not in text
            assert len(text.splitlines()) == 1
    finally:
        taken.close()
    result = runner.invoke(app, ["console", "--help"])
    assert result.exit_code == 0 and "Server-Sent Events" in result.output


def test_the_tape_joins_late_traces_and_the_panels_read_what_traces_carry(fresh, rclient):
    """Hand-written entries (what serve would write with a confidence and the watchdog's
    acting state): a fill read before its trace is joined once the trace comes; the
    histogram, acting counts, fallback split and reward drift are those of the entries."""
    from execrl.service.streams import encode

    _, tokens, _, http = fresh
    h = _auth(tokens, "pam")
    tape = http.app.state.tape
    rclient.xadd(STREAM_ORDERS, encode(_order(1)))
    rclient.xadd(STREAM_FILLS, encode({"kind": "child", "id": "H-1:1", "parent_id": "H-1",
                                       "child_id": 1, "type": "limit", "qty": 100, "px": 49.9,
                                       "step": 0, "ts_ns": 2}))
    wait_for(lambda: tape.seq >= 2, what="the child order on the tape")
    row = http.get("/api/tape", headers=h).json()["rows"][-1]
    assert row["kind"] == "child" and row.get("action") is None
    rng = np.random.default_rng(3)
    conf = rng.uniform(0.2, 1.0, size=40)
    for step, c in enumerate(conf):
        rclient.xadd(STREAM_RESEARCH, encode({
            "kind": "decision", "id": f"H-1:decision:{step}", "parent_id": "H-1", "step": step,
            "action": [step % 5], "confidence": float(c),
            "acting": "policy" if c >= 0.6 else "fallback", "ts_ns": 10_000_000 + step,
            "market_ts_ns": 1}))
    for i, (by, ret) in enumerate((("policy", -3.0), ("fallback", -5.0), ("policy", None))):
        rclient.xadd(STREAM_FILLS, encode({
            "kind": "done", "id": f"D-{i}:done", "parent_id": f"D-{i}", "symbol": "DEMO",
            "side": "sell", "is_bps": 1.5 * i, "finished_by": by, "ts_ns": 100 + i,
            **({} if ret is None else {"return": ret})}))
    wait_for(lambda: http.get("/api/analytics", headers=h).json()["confidence"]["n"] == 40,
             what="the traces read")
    row = http.get("/api/tape", headers=h).json()["rows"][1]
    assert row["kind"] == "child" and row["action"] == [0]
    assert row["confidence"] == conf[0]
    assert row["acting"] == ("policy" if conf[0] >= 0.6 else "fallback")
    an = http.get("/api/analytics", headers=h).json()
    counts, _ = np.histogram(conf, bins=20, range=(0, 1))
    assert an["confidence"]["counts"] == counts.tolist()
    assert an["fallback"]["acting"] == {"policy": int((conf >= 0.6).sum()),
                                        "fallback": int((conf < 0.6).sum())}
    fb = an["fallback"]
    assert (fb["n_policy"], fb["n_fallback"], fb["rate"]) == (2, 1, pytest.approx(1 / 3))
    assert fb["mean_is_policy"] == pytest.approx(1.5) and fb["mean_is_fallback"] == 1.5
    drift = an["drift"]
    assert drift["has_reward"] and [p["reward"] for p in drift["series"]] == [-3.0, -5.0, None]
    assert an["latency"]["p50"] == pytest.approx(
        float(np.quantile((10_000_000 + np.arange(40) - 1) / 1e6, 0.5)))

