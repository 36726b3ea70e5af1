"""The SQL half of the audit trail: one schema (runs, orders, incidents) through SQLAlchemy Core,
the same tables in SQLite (the default, a file inside the trail's folder) and PostgreSQL (by URL).

Per-decision and per-fill records are Parquet (``audit.py``); what a desk queries across runs,
the per-order summary and the incidents, lives here. Types are the portable subset: BIGINT,
DOUBLE, VARCHAR, TEXT. Integers are never NULL (``-1`` / ``0`` stand for "none"); a float NaN is
stored as NULL (SQLite cannot hold a NaN) and read back as NaN; strings are never NULL ("").
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from execrl.domain import ConfigError
from execrl.domain.errors import ExecRLError

metadata = sa.MetaData()

runs = sa.Table(
    "runs", metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("created", sa.String(32), nullable=False),  # ISO-8601 UTC: the one wall-clock field
    sa.Column("execrl_version", sa.String(32), nullable=False),
    sa.Column("meta", sa.Text, nullable=False),  # JSON, sorted keys
    sa.Column("n_orders", sa.BigInteger, nullable=False),
    sa.Column("n_decisions", sa.BigInteger, nullable=False),
    sa.Column("n_children", sa.BigInteger, nullable=False),
    sa.Column("n_fills", sa.BigInteger, nullable=False),
    sa.Column("n_market", sa.BigInteger, nullable=False),
    sa.Column("n_incidents", sa.BigInteger, nullable=False),
)

#: the per-order summary the executor hands to ``AuditTrail.close``: column -> (kind, default);
#: kind "int" / "float" / "str"; default None = required
ORDER_FIELDS: dict[str, tuple[str, Any]] = {
    "order_idx": ("int", None),
    "order_id": ("str", None),
    "policy": ("str", ""),
    "policy_hash": ("str", ""),
    "symbol": ("str", None),
    "side": ("str", None),
    "venue": ("str", ""),
    "qty": ("int", None),
    "arrival_mid": ("float", math.nan),
    "start_s": ("float", math.nan),  # the order's start and horizon end, on the t_s clock
    "end_s": ("float", math.nan),
    "filled": ("int", None),
    "fill_rate": ("float", math.nan),
    "avg_px": ("float", math.nan),
    "is_bps": ("float", math.nan),
    "residual_shares": ("int", 0),
    "residual_is_bps": ("float", math.nan),
    "child_orders": ("int", 0),
    "fills": ("int", 0),
    "cancels": ("int", 0),
    "rejects": ("int", 0),
    "guard_rejects": ("int", 0),
    "final_state": ("str", ""),
    "trigger": ("str", ""),
    "trigger_step": ("int", -1),
    "fees": ("float", 0.0),
}

INCIDENT_FIELDS: dict[str, tuple[str, Any]] = {
    "seq": ("int", None),  # position in the run, so that two identical runs read back alike
    "order_idx": ("int", None),
    "order_id": ("str", ""),
    "step": ("int", -1),
    "t_s": ("float", math.nan),
    "kind": ("str", None),  # "RL_ABORTED", "KILLED", "GUARD_TRIP", ...
    "trigger": ("str", ""),
    "detail": ("str", "{}"),  # JSON text, sorted keys
}

_SA_TYPES = {"int": sa.BigInteger, "float": sa.Double, "str": sa.String}


def _table(name: str, fields: Mapping[str, tuple[str, Any]], key: str) -> sa.Table:
    columns = [sa.Column("run_id", sa.String(64), primary_key=True)]
    for column, (kind, _default) in fields.items():
        sa_type = sa.Text if column == "detail" else _SA_TYPES[kind]
        columns.append(sa.Column(column, sa_type, primary_key=column == key,
                                 nullable=kind == "float"))
    return sa.Table(name, metadata, *columns)


orders = _table("orders", ORDER_FIELDS, "order_idx")
incidents = _table("incidents", INCIDENT_FIELDS, "seq")
sa.Index("ix_incidents_order", incidents.c.run_id, incidents.c.order_idx)


def normalise_url(url: str) -> sa.URL:
    """``url`` as SQLAlchemy reads it, with PostgreSQL going through psycopg 3 (the driver
    execrl installs) unless another one is named; a bad URL is one line naming it."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise ConfigError(f"sql_url {url!r} is not a database URL (e.g. "
                          "postgresql://user@host/db or sqlite:///trail.sqlite)") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def shown_url(url: sa.URL) -> str:
    """The URL without its password, for messages and the trail's manifest."""
    return url.render_as_string(hide_password=True)


def engine_for(url: sa.URL) -> sa.Engine:
    return sa.create_engine(url, poolclass=sa.pool.NullPool)  # no connection outlives a call


def _records(frame: pd.DataFrame, fields: Mapping[str, tuple[str, Any]],
             run_id: str) -> list[dict[str, Any]]:
    """Rows of ``frame`` as plain Python values (no numpy scalars: psycopg would refuse them),
    NaN as None."""
    columns: dict[str, list[Any]] = {}
    for column, (kind, _default) in fields.items():
        values = frame[column].to_numpy()
        if kind == "float":
            values = values.astype(np.float64)
            columns[column] = [None if math.isnan(v) else v for v in values.tolist()]
        elif kind == "int":
            columns[column] = values.astype(np.int64).tolist()
        else:
            columns[column] = [str(v) for v in values.tolist()]
    names = list(columns)
    return [{"run_id": run_id, **dict(zip(names, row, strict=True))}
            for row in zip(*columns.values(), strict=True)]


def write_sql(url: sa.URL, run_row: Mapping[str, Any], order_rows: pd.DataFrame,
              incident_rows: pd.DataFrame, replace: bool) -> None:
    """Insert one run in one transaction: all of it or (on any error) none of it.

    A run id already in the database is refused unless ``replace`` (then its old rows go in the
    same transaction)."""
    engine = engine_for(url)
    run_id = str(run_row["run_id"])
    try:
        metadata.create_all(engine, checkfirst=True)
        with engine.begin() as conn:
            exists = conn.execute(
                sa.select(runs.c.run_id).where(runs.c.run_id == run_id)).first()
            if exists is not None:
                if not replace:
                    raise ExecRLError(
                        f"run_id {run_id!r} is already in the audit database "
                        f"{shown_url(url)}; pass another run_id (or overwrite=True)")
                _delete(conn, run_id)
            conn.execute(runs.insert(), [dict(run_row)])
            for table, frame, fields in ((orders, order_rows, ORDER_FIELDS),
                                         (incidents, incident_rows, INCIDENT_FIELDS)):
                rows = _records(frame, fields, run_id)
                if rows:
                    conn.execute(table.insert(), rows)
    finally:
        engine.dispose()


def _delete(conn: sa.Connection, run_id: str) -> None:
    for table in (incidents, orders, runs):
        conn.execute(table.delete().where(table.c.run_id == run_id))


def delete_run(url: sa.URL, run_id: str) -> None:
    """Take a run out again (the Parquet half could not be put in place after the commit)."""
    engine = engine_for(url)
    try:
        with engine.begin() as conn:
            _delete(conn, run_id)
    finally:
        engine.dispose()


def _frame(rows: Iterable[sa.Row], table: sa.Table,
           fields: Mapping[str, tuple[str, Any]]) -> pd.DataFrame:
    """Rows as a frame with the schema's dtypes, whichever database they came from."""
    names = [c.name for c in table.columns]
    frame = pd.DataFrame([tuple(r) for r in rows], columns=names)
    kinds = {"run_id": "str", **{c: k for c, (k, _d) in fields.items()}}
    for column in names:
        kind = kinds.get(column, "str")
        if kind == "int":
            frame[column] = frame[column].astype(np.int64)
        elif kind == "float":
            frame[column] = pd.to_numeric(frame[column], errors="raise").astype(np.float64)
        else:
            frame[column] = frame[column].astype(str)
    return frame


RUN_FIELDS: dict[str, tuple[str, Any]] = {
    "created": ("str", None), "execrl_version": ("str", None), "meta": ("str", None),
    **{c: ("int", None) for c in ("n_orders", "n_decisions", "n_children", "n_fills",
                                  "n_market", "n_incidents")},
}


def read_sql(url: sa.URL, run_id: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(runs, orders, incidents) of one run, ordered by their keys."""
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            out = []
            for table, fields, key in ((runs, RUN_FIELDS, "run_id"),
                                       (orders, ORDER_FIELDS, "order_idx"),
                                       (incidents, INCIDENT_FIELDS, "seq")):
                rows = conn.execute(sa.select(table).where(table.c.run_id == run_id)
                                    .order_by(table.c[key])).all()
                out.append(_frame(rows, table, fields))
    except sa.exc.OperationalError as exc:
        raise ExecRLError(f"audit database {shown_url(url)} cannot be read: "
                          f"{str(exc.orig).strip().splitlines()[0]}") from None
    finally:
        engine.dispose()
    return out[0], out[1], out[2]


def detail_json(detail: Any) -> str:
    """An incident's detail as deterministic JSON text."""
    if isinstance(detail, str):
        return detail
    return json.dumps(detail, sort_keys=True, default=_plain)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
