"""The service's per-order SQL summary (seed 001 §13: "Postgres: per-order summary table"), and
the tables behind shadow A/B and the canary's gates, so that both survive a restart.

SQLAlchemy Core through the audit trail's engine helpers (``executor.sql``: the URL read the
same way, PostgreSQL through psycopg 3); SQLite by default (a file), PostgreSQL by URL.

- ``service_orders``: one row per done parent order, written by ``execrl serve`` right before
  the order's ``done`` record goes on ``STREAM_FILLS`` (so every done order on the stream has
  its row; a service killed in between re-runs the order, deterministically, and writes the
  same row again). Keyed by ``order_id`` and written with ``INSERT ... ON CONFLICT DO
  NOTHING``: a second write of a done order leaves the first row.
- ``service_ab_pairs``: per (shadow candidate, order) the live order's IS and the candidate's
  counterfactual IS on the same market path (``service.abtest``).
- ``service_canary``: per (canary policy, order) what its SLO gates judge: the order's IS, the
  Almgren–Chriss baseline's IS in shadow on the same path, decisions, violations and each
  decision's latency (``service.canary``).

Floats NaN are NULL (SQLite cannot hold a NaN) and read back as NaN; times are ISO-8601 UTC.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from execrl.domain import ConfigError
from execrl.executor.sql import engine_for, normalise_url, shown_url

DEFAULT_URL_ENV = "EXECRL_SUMMARY_URL"
DEFAULT_URL = "sqlite:///execrl-summary.sqlite"
#: the routes an order can take (``service.canary``)
ROUTES = ("live", "canary", "fallback")

metadata = sa.MetaData()

#: column -> kind ("int", "float", "str") of the per-order summary
ORDER_COLUMNS: dict[str, str] = {
    "order_id": "str", "symbol": "str", "side": "str", "qty": "int", "filled": "int",
    "is_bps": "float", "fill_rate": "float", "child_orders": "int", "fills": "int",
    "residual_shares": "int", "steps": "int", "finished_by": "str", "policy": "str",
    "policy_hash": "str", "route": "str", "shadow_policy_hash": "str",
    "shadow_is_bps": "float", "started_at": "str", "finished_at": "str",
}
PAIR_COLUMNS: dict[str, str] = {
    "candidate_hash": "str", "order_id": "str", "candidate": "str", "live": "str",
    "live_hash": "str", "live_is_bps": "float", "candidate_is_bps": "float",
    "recorded_at": "str",
}
CANARY_COLUMNS: dict[str, str] = {
    "policy_hash": "str", "order_id": "str", "is_bps": "float", "baseline_is_bps": "float",
    "decisions": "int", "violations": "int", "latencies_ms": "str", "recorded_at": "str",
}
_SA = {"int": sa.BigInteger, "float": sa.Double, "str": sa.String(256)}


def _table(name: str, columns: Mapping[str, str], keys: tuple[str, ...]) -> sa.Table:
    cols = []
    for column, kind in columns.items():
        sa_type = sa.Text if column == "latencies_ms" else _SA[kind]
        cols.append(sa.Column(column, sa_type, primary_key=column in keys,
                              nullable=kind == "float"))
    return sa.Table(name, metadata, *cols)


orders = _table("service_orders", ORDER_COLUMNS, ("order_id",))
pairs = _table("service_ab_pairs", PAIR_COLUMNS, ("candidate_hash", "order_id"))
canary = _table("service_canary", CANARY_COLUMNS, ("policy_hash", "order_id"))


def default_url() -> str:
    return os.environ.get(DEFAULT_URL_ENV) or DEFAULT_URL


def iso(ts_ns: int) -> str:
    """A ``time.time_ns()`` stamp as ISO-8601 UTC (microseconds)."""
    return datetime.fromtimestamp(ts_ns / 1e9, UTC).isoformat(timespec="microseconds")


def _plain(value: Any, kind: str) -> Any:
    """A value as the column stores it (no numpy scalars: psycopg refuses them)."""
    if kind == "float":
        v = float(value) if value is not None else math.nan
        return None if math.isnan(v) else v
    if kind == "int":
        return int(value)
    return "" if value is None else str(value)


class SummaryDB:
    """The three tables in one database (``url``; default ``$EXECRL_SUMMARY_URL`` or
    ``sqlite:///execrl-summary.sqlite``), created on first use. A URL that cannot be used is
    one ``ConfigError`` line naming ``--summary-db`` and the URL."""

    def __init__(self, url: str | None = None):
        self.url = url or default_url()
        parsed = normalise_url(self.url)
        self.shown = shown_url(parsed)
        if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
            raise ConfigError(f"--summary-db {self.shown!r} is an in-memory database, gone with "
                              "each connection: give a file (sqlite:///summary.sqlite)")
        try:
            self.engine = engine_for(parsed)
            metadata.create_all(self.engine, checkfirst=True)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise ConfigError(f"--summary-db {self.shown!r}: no database driver for "
                              f"{parsed.drivername!r} ({str(exc).splitlines()[0]})") from None
        except sa.exc.DBAPIError as exc:
            first = str(getattr(exc, "orig", exc) or exc).strip().splitlines()
            raise ConfigError(f"--summary-db {self.shown!r}: cannot open it"
                              f"{': ' + first[0] if first else ''}") from None
        self._dialect = self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    # -- writes ------------------------------------------------------------------------------
    def _insert_once(self, table: sa.Table, columns: Mapping[str, str],
                     row: Mapping[str, Any]) -> bool:
        """Insert ``row`` unless its key is there already; True when this call wrote it."""
        values = {c: _plain(row.get(c), kind) for c, kind in columns.items()}
        if self._dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        keys = [c.name for c in table.primary_key.columns]
        statement = insert(table).values(**values).on_conflict_do_nothing(index_elements=keys)
        with self.engine.begin() as conn:
            return conn.execute(statement).rowcount == 1

    def write_order(self, row: Mapping[str, Any]) -> bool:
        """The summary of a done order (``ORDER_COLUMNS``); once per order id."""
        if row.get("route") not in ROUTES:
            raise ValueError(f"route {row.get('route')!r} is not one of {', '.join(ROUTES)}")
        return self._insert_once(orders, ORDER_COLUMNS, row)

    def write_pair(self, row: Mapping[str, Any]) -> bool:
        return self._insert_once(pairs, PAIR_COLUMNS, row)

    def write_canary(self, row: Mapping[str, Any]) -> bool:
        return self._insert_once(canary, CANARY_COLUMNS, row)

    # -- reads -------------------------------------------------------------------------------
    def _frame(self, table: sa.Table, columns: Mapping[str, str], where: Any = None,
               order_by: tuple[str, ...] = ("order_id",)) -> pd.DataFrame:
        query = sa.select(table).order_by(*(table.c[c] for c in order_by))
        if where is not None:
            query = query.where(where)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        frame = pd.DataFrame([tuple(r) for r in rows], columns=[c.name for c in table.columns])
        for column, kind in columns.items():
            if kind == "int":
                frame[column] = frame[column].astype(np.int64)
            elif kind == "float":
                frame[column] = pd.to_numeric(frame[column]).astype(np.float64)
            else:
                frame[column] = frame[column].astype(str)
        return frame

    def orders(self) -> pd.DataFrame:
        """Every order's summary, by order id."""
        return self._frame(orders, ORDER_COLUMNS)

    def pairs(self, candidate_hash: str, live_hash: str | None = None) -> pd.DataFrame:
        """The A/B pairs of one shadow candidate (against one live policy), by order id: the
        order the statistics read them in, whatever order they were written in."""
        where = pairs.c.candidate_hash == candidate_hash
        if live_hash is not None:
            where = sa.and_(where, pairs.c.live_hash == live_hash)
        return self._frame(pairs, PAIR_COLUMNS, where)

    def canary_rows(self, policy_hash: str) -> pd.DataFrame:
        """What the canary ``policy_hash``'s gates judge, by order id."""
        return self._frame(canary, CANARY_COLUMNS, canary.c.policy_hash == policy_hash)


def latencies_json(latencies_ms: Any) -> str:
    return json.dumps([round(float(v), 6) for v in np.asarray(latencies_ms, float).ravel()])


__all__ = ["CANARY_COLUMNS", "DEFAULT_URL", "DEFAULT_URL_ENV", "ORDER_COLUMNS", "PAIR_COLUMNS",
           "ROUTES", "SummaryDB", "canary", "default_url", "iso", "latencies_json", "orders",
           "pairs"]
