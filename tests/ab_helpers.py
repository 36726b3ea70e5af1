"""Shared by the shadow A/B, canary and summary tests: orders, a service run in process on a
real Redis (no lockstep: the runs go as fast as the executor), and a registry with a live
policy (through 4-eyes), a shadow candidate and a canary."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from execrl.presets import preset_market
from execrl.service.registry import Registry
from execrl.service.serve import ServeConfig, Server
from execrl.service.streams import STREAM_FILLS, STREAM_ORDERS, decode, encode
from registry_helpers import cheap_tokens, make_checkpoint, staffed

MARKET = preset_market("ac")


def order(i: int, prefix: str = "T") -> dict:
    return {"order_id": f"{prefix}-{i}", "symbol": "DEMO", "side": "sell" if i % 2 else "buy",
            "qty": 60_000 + 1_000 * i, "arrival_px": 50.0, "start_ts": 0, "horizon_s": 3600}


def serve(client, orders: list[dict], **config) -> Server:
    """Put ``orders`` on STREAM_ORDERS and serve until each is answered."""
    for o in orders:
        client.xadd(STREAM_ORDERS, encode(o))
    log = config.pop("log", None) or (lambda text: None)
    cfg = ServeConfig(market=MARKET, lockstep=False, max_orders=len(orders),
                      concurrency=config.pop("concurrency", 4), **config)
    server = Server(client, cfg, log=log)
    server.serve()
    return server


def done_records(client) -> dict[str, dict]:
    return {m["parent_id"]: m for m in (decode(f) for _, f in client.xrange(STREAM_FILLS))
            if m["kind"] == "done"}


def pg_database(postgres_url: str) -> str:
    """A fresh database on the test server, as a URL."""
    name = f"sum_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    engine.dispose()
    return sa.make_url(postgres_url).set(database=name).render_as_string(hide_password=False)


@dataclass
class Desk:
    registry: Registry
    url: str
    people: dict
    live: str
    shadow: str | None
    canary: str | None


def desk(tmp_path: Path, monkeypatch, shadow: bool = True, canary: bool = True) -> Desk:
    """A registry (SQLite) with a desk-wide live policy, and optionally a shadow candidate
    and a canary, all real checkpoints."""
    cheap_tokens(monkeypatch)
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    reg = Registry(url)
    people = staffed(reg)
    q = people["quinn"]
    ck = [make_checkpoint(tmp_path / f"ck{i}", seed=i) for i in range(3)]
    live = reg.register(q, ck[0]).policy_hash
    reg.promote(q, live)
    reg.promote(q, live)
    reg.request(q, live)
    reg.approve(people["pam"], live)
    reg.approve(people["rita"], live)
    sh = cn = None
    if shadow:
        sh = reg.register(q, ck[1]).policy_hash
        reg.promote(q, sh)
    if canary:
        cn = reg.register(q, ck[2]).policy_hash
        reg.promote(q, cn)
        reg.promote(q, cn)
    return Desk(reg, url, people, live, sh, cn)
