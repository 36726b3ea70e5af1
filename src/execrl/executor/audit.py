"""The audit trail: every decision, child order and fill of a run on record (seed 001 §6, §13).

Per-decision, per-child, per-fill and market records go to Parquet; the per-order summary and the
incidents go to SQL (``executor.sql``: SQLite inside the folder by default, PostgreSQL by URL).
A trail folder holds::

    trail.json          manifest: run id, where the SQL half lives, row counts, vocabularies
    decisions.parquet   one row per order and decision step
    children.parquet    the decisions that sent a child order, in seed 001 §9.1's fields
    fills.parquet       one row per fill event
    market.parquet      the market each order saw, per step
    trail.sqlite        runs, orders, incidents (unless the SQL half is elsewhere)

Writing sits in the decision loop, so ``add_decisions`` only copies the raw bytes of each column
into a list (one ``tobytes`` per column); typing, labels and the per-order joins happen once in
``close``. Nothing reaches the folder before ``close``: the files are written into a staging
folder that replaces the target only when everything (the SQL transaction included) succeeded,
so a failure leaves no half-written trail and an existing one as it was. The same inputs give
byte-identical Parquet files; the one wall-clock value is ``runs.created`` in SQL.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

import execrl
from execrl.domain import ConfigError, OrderType
from execrl.domain.errors import ExecRLError
from execrl.domain.outputs import InterruptedAfterSwap, staged_folder
from execrl.executor import sql
from execrl.market.events import FILL_DTYPE

MANIFEST = "trail.json"
SQLITE_FILE = "trail.sqlite"
FORMAT = "execrl-audit-trail"
FORMAT_VERSION = 1
TRAIL_FILES = ("decisions.parquet", "children.parquet", "fills.parquet", "market.parquet")

#: code -> name of the label columns (the executor passes integer codes per step)
DEFAULT_LABELS: dict[str, tuple[str, ...]] = {
    "acting": ("policy", "fallback", "passive"),
    "child_type": tuple(t.value for t in OrderType),  # sim.base.ORDER_TYPE_CODES
    "watchdog_state": ("RL", "FALLBACK", "PASSIVE", "DONE", "KILLED"),
    "trigger": ("none", "late_and_unfilled", "price_beyond_vwap", "policy_fault",
                "low_confidence", "drift", "latency", "kill_or_loss", "out_of_domain",
                "extreme_volatility"),
}

_I16, _I32, _I64 = np.dtype(np.int16), np.dtype(np.int32), np.dtype(np.int64)
_F32, _F64, _BOOL = np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.bool_)

#: per-step decision columns the executor passes: name -> (stored dtype, default; None =
#: required). "features" (n, n_features) becomes one float32 column f_<name> per feature;
#: "scores" (n, k: action probabilities or Q-values) and "mask" (n, k) become list columns.
DECISION_INPUTS: dict[str, tuple[np.dtype, Any]] = {
    "order_idx": (_I64, None),
    "step": (_I32, None),
    "t_s": (_F64, None),
    "remaining_before": (_I64, -1),
    "working_before": (_I64, -1),
    "mid": (_F64, math.nan),
    "action": (_F64, math.nan),
    "confidence": (_F64, math.nan),
    "acting": (_I16, 0),  # label code
    "child_id": (_I64, -1),
    "child_qty": (_I64, None),  # shares sent after the guard (0: no child this step)
    "child_type": (_I16, -1),  # label code (sim.base.ORDER_TYPE_CODES); -1 = none
    "child_px": (_F64, math.nan),  # NaN for a market order
    "ttl_ms": (_I64, 0),
    "guard_code": (_I16, 0),
    "guard_adjusted": (_BOOL, False),
    "market_reject": (_I16, 0),
    "filled_qty": (_I64, None),  # every share filled in the step (FillBatch.qty)
    "fill_px": (_F64, math.nan),
    "watchdog_state": (_I16, 0),  # label code
    "trigger": (_I16, 0),  # label code
    "latency_us": (_F64, math.nan),
    # the probability the behaviour (the policy, with guard-gated exploration where on) gave
    # the action taken: off-policy evaluation's weights (executor.explore); NaN = not known
    "propensity": (_F64, math.nan),
}
_MATRICES: dict[str, np.dtype] = {"features": _F32, "scores": _F32, "mask": _BOOL}

MARKET_INPUTS: dict[str, tuple[np.dtype, Any]] = {
    "order_idx": (_I64, None),
    "step": (_I32, None),
    "t_s": (_F64, None),
    "mid": (_F64, None),
    "best_bid": (_F64, math.nan),
    "best_ask": (_F64, math.nan),
    "market_volume": (_F64, math.nan),
}

#: the per-order columns copied from the summary into each decision row
_ORDER_COLUMNS = ("order_id", "policy", "policy_hash", "side")


class _Columns:
    """Columnar buffers of one record kind: raw bytes per column per call, typed at the end."""

    def __init__(self, what: str, inputs: Mapping[str, tuple[np.dtype, Any]],
                 matrices: Mapping[str, np.dtype] | None = None,
                 widths: Mapping[str, int] | None = None) -> None:
        self.what = what
        self.inputs = dict(inputs)
        self.matrices = dict(matrices or {})
        self.widths = dict(widths or {})  # fixed trailing widths (features)
        self._slots: list[tuple[str, np.dtype, int, Any]] | None = None
        self._n_cols = 0
        self._chunks: dict[str, list[bytes]] = {}
        self._given: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
        self.rows = 0
        self._calls = 0
        self._record: np.dtype | None = None  # set when the steps come as structured records
        self._records: list[bytes] = []

    def record_dtype(self, matrix_widths: Mapping[str, int] | None = None) -> np.dtype:
        """One structured row holding every column (matrices as sub-arrays of their width;
        a width of 0 leaves the matrix out)."""
        widths = {**self.widths, **(matrix_widths or {})}
        fields: list[tuple[Any, ...]] = [(n, d) for n, (d, _default) in self.inputs.items()]
        fields += [(n, d, (widths[n],)) for n, d in self.matrices.items() if widths.get(n, 0)]
        return np.dtype(fields)

    def add_record(self, record: NDArray[Any]) -> None:
        """A step as one structured array of ``record_dtype``: one copy, whatever the width."""
        if self._record is None:
            if self._slots is not None:
                raise ExecRLError(f"{self.what}: the first call passed columns; pass columns "
                                  "in every call")
            names = record.dtype.names or ()
            want = self.record_dtype({n: record.dtype[n].shape[0] for n in self.matrices
                                      if n in names and record.dtype[n].ndim == 1})
            if record.ndim != 1 or record.dtype != want:
                raise ExecRLError(f"{self.what}: a record must be a 1-D array of the trail's "
                                  f"record dtype {want}, not {record.dtype}")
            self._record = want
            for name in self.matrices:
                if name in names:
                    self._given[name] = (self.matrices[name], want[name].shape)
        elif record.dtype is not self._record and record.dtype != self._record:
            raise ExecRLError(f"{self.what}: record dtype {record.dtype} differs from the "
                              f"first call's {self._record}")
        self._records.append(record.tobytes())
        self.rows += len(record)

    def _bind(self, cols: Mapping[str, NDArray[Any]]) -> list[tuple[str, np.dtype, int, Any]]:
        """The first call fixes which columns come, their dtypes and widths."""
        for name, (_dtype, default) in self.inputs.items():
            if default is None and name not in cols:
                raise ExecRLError(f"{self.what}: column {name!r} is required")
        slots = []
        given: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
        buffers: dict[str, list[bytes]] = {}
        for name, value in cols.items():
            if not isinstance(value, np.ndarray):
                raise ExecRLError(f"{self.what}: column {name!r} must be a numpy array, "
                                  f"not {type(value).__name__}")
            target = self.inputs[name][0] if name in self.inputs else self.matrices.get(name)
            if target is None:
                known = sorted([*self.inputs, *self.matrices])
                raise ExecRLError(f"{self.what}: unknown column {name!r} (known: {known})")
            want_dim = 2 if name in self.matrices else 1
            if value.ndim != want_dim or value.dtype.kind not in "biuf" or (
                    not np.can_cast(value.dtype, target, "same_kind")
                    and not (target.kind == "b" and value.dtype.kind in "iu")):
                raise ExecRLError(
                    f"{self.what}: column {name!r} has dtype {value.dtype} and {value.ndim} "
                    f"dimension(s); expected {want_dim} of {target}")
            if name in self.widths and value.shape[1] != self.widths[name]:
                raise ExecRLError(f"{self.what}: {name!r} has {value.shape[1]} columns, the "
                                  f"trail was opened with {self.widths[name]} names")
            given[name] = (value.dtype, value.shape[1:])
            chunks: list[bytes] = []
            buffers[name] = chunks
            slots.append((name, value.dtype, value.dtype.itemsize * int(np.prod(
                value.shape[1:], dtype=np.int64)), chunks.append))
        self._n_cols, self._given, self._chunks = len(slots), given, buffers
        return slots

    def add(self, cols: Mapping[str, NDArray[Any]]) -> None:
        slots = self._slots
        if slots is None:
            if self._record is not None:
                raise ExecRLError(f"{self.what}: the first call passed a record; pass records "
                                  "in every call")
            slots = self._slots = self._bind(cols)
        elif len(cols) != self._n_cols:
            raise ExecRLError(f"{self.what}: columns {sorted(cols)} differ from the first "
                              f"call's {sorted(self._chunks)}")
        try:
            n = len(cols["order_idx"])
            for name, dtype, row_bytes, append in slots:
                value = cols[name]
                raw = value.tobytes()  # a copy: the caller may reuse its arrays next step
                if len(raw) != n * row_bytes or (value.dtype is not dtype
                                                 and value.dtype != dtype):
                    raise self._mismatch(name, value, dtype, row_bytes, n)
                append(raw)
        except (KeyError, ExecRLError) as exc:
            for chunks in self._chunks.values():  # the call is refused whole
                del chunks[self._calls:]
            if isinstance(exc, ExecRLError):
                raise
            raise ExecRLError(f"{self.what}: column {exc.args[0]!r} is missing (the first "
                              f"call gave {sorted(self._chunks)})") from None
        self.rows += n
        self._calls += 1

    def _mismatch(self, name: str, value: NDArray[Any], dtype: np.dtype, row_bytes: int,
                  n: int) -> ExecRLError:
        return ExecRLError(
            f"{self.what}: column {name!r} is {value.dtype}{value.shape}; the first call gave "
            f"{dtype} with {row_bytes // dtype.itemsize} value(s) per row and this call has "
            f"{n} row(s)")

    def arrays(self) -> dict[str, NDArray[Any]]:
        """Every input column, typed, defaults filled in."""
        out: dict[str, NDArray[Any]] = {}
        if self._record is not None:
            rec = np.frombuffer(b"".join(self._records), dtype=self._record)
            for name, (dtype, _default) in self.inputs.items():
                out[name] = rec[name].astype(dtype)
            for name, dtype in self.matrices.items():
                out[name] = (rec[name].astype(dtype) if name in self._record.names
                             else np.zeros((self.rows, self.widths.get(name, 0)), dtype))
            return out
        for name, (dtype, default) in self.inputs.items():
            if name in self._chunks:
                given, _trail = self._given[name]
                out[name] = np.frombuffer(b"".join(self._chunks[name]), dtype=given).astype(dtype)
            else:
                out[name] = np.full(self.rows, default, dtype=dtype)
        for name, dtype in self.matrices.items():
            if name in self._chunks:
                given, trailing = self._given[name]
                flat = np.frombuffer(b"".join(self._chunks[name]), dtype=given)
                out[name] = flat.reshape(self.rows, *trailing).astype(dtype)
            else:
                out[name] = np.zeros((self.rows, self.widths.get(name, 0)), dtype=dtype)
        return out


def _labels(codes: NDArray[np.int16], names: Sequence[str]) -> pa.Array:
    """Codes as their names (Parquet dictionary-encodes them); -1 is null, a code without a
    name keeps it as code_<n>."""
    if codes.size and int(codes.min()) < -1:
        raise ExecRLError(f"label code {int(codes.min())} below -1")
    top = int(codes.max()) if codes.size else -1
    vocab = pa.array([*names, *(f"code_{c}" for c in range(len(names), top + 1))], pa.string())
    return vocab.take(pa.array(codes.astype(np.int32), mask=codes < 0))


def _lists(matrix: NDArray[Any], present: bool, value_type: pa.DataType) -> pa.Array:
    rows, width = matrix.shape
    if not present:
        return pa.nulls(rows, pa.list_(value_type))
    offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * width)
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1), value_type))


def _write(table: pa.Table, path: Path) -> None:
    # fixed writer settings and no pandas metadata: same rows, same bytes
    pq.write_table(table, path, compression="zstd", use_dictionary=True, write_statistics=True)


@dataclass
class Trail:
    """A trail read back: the Parquet files and the SQL rows of its run, as frames."""

    run_id: str
    manifest: dict[str, Any]
    runs: pd.DataFrame
    orders: pd.DataFrame
    incidents: pd.DataFrame
    decisions: pd.DataFrame
    children: pd.DataFrame
    fills: pd.DataFrame
    market: pd.DataFrame
    features: tuple[str, ...] = field(default=())


class AuditTrail:
    """Collects one run's records and writes them at ``close``, all or nothing.

    ``folder``: the trail's folder (refused if it exists, unless ``overwrite``: then it is
    replaced whole once the new trail is complete). ``sql_url``: where runs / orders / incidents
    go (None: SQLite at ``folder/trail.sqlite``). ``run_id``: None derives it from the run's
    meta, so the same run gets the same id. ``features``: the names of the ``features``
    matrix's columns. ``labels``: code -> name per label column, over ``DEFAULT_LABELS``.
    """

    def __init__(self, folder: str | Path, sql_url: str | None = None,
                 run_id: str | None = None, *, features: Sequence[str] = (),
                 labels: Mapping[str, Sequence[str]] | None = None,
                 overwrite: bool = False) -> None:
        self.folder = Path(folder)
        self.overwrite = overwrite
        self._check_folder()
        self.sql_url = None if sql_url is None else sql.normalise_url(sql_url)
        if run_id is not None and not (isinstance(run_id, str) and 0 < len(run_id) <= 64):
            raise ConfigError(f"run_id {run_id!r} must be a string of 1 to 64 characters")
        self.run_id = run_id
        self.features = tuple(str(f) for f in features)
        if len(set(self.features)) != len(self.features):
            raise ConfigError(f"features {list(self.features)} name a column twice")
        unknown = sorted(set(labels or {}) - set(DEFAULT_LABELS))
        if unknown:
            raise ConfigError(f"labels {unknown} are not label columns "
                              f"(those are {sorted(DEFAULT_LABELS)})")
        self.labels = {**DEFAULT_LABELS, **{k: tuple(v) for k, v in (labels or {}).items()}}
        self.meta: dict[str, Any] = {}
        self.created: str | None = None
        self._decisions = _Columns("decisions", DECISION_INPUTS, _MATRICES,
                                   {"features": len(self.features)})
        self._market = _Columns("market", MARKET_INPUTS)
        self._fills: list[tuple[bytes, NDArray[np.int64] | None, Any]] = []
        self._incidents: list[dict[str, Any]] = []
        self.closed = False

    def _check_folder(self) -> None:
        if self.folder.exists() and not self.overwrite:
            raise ConfigError(f"audit trail folder {str(self.folder)!r} already exists; name a "
                              "new one (an audit trail is never replaced unless asked)")
        if self.folder.exists() and not self.folder.is_dir():
            raise ConfigError(f"audit trail folder {str(self.folder)!r} is a file")

    # -- records -------------------------------------------------------------------------
    def write_run(self, meta: Mapping[str, Any], created: str | None = None) -> None:
        """The run's description (policy, config, seeds, market ...), JSON-serialisable."""
        self.meta = dict(meta)
        self.created = created

    def add_decisions(self, cols: Mapping[str, NDArray[Any]] | NDArray[Any]) -> None:
        """One step's decisions, one row per order that decided: ``DECISION_INPUTS`` columns
        plus the ``features`` / ``scores`` / ``mask`` matrices. The first call fixes the
        column set and dtypes; each later call must pass the same ones. Arrays are copied.

        Or one structured array of ``decision_dtype(n_actions)`` (every column, one copy per
        call: the cheapest form where a kernel fills the record); every call the same form."""
        if type(cols) is np.ndarray:
            self._decisions.add_record(cols)
        else:
            self._decisions.add(cols)

    def decision_dtype(self, n_actions: int = 0) -> np.dtype:
        """The structured dtype of a step's decision record: ``DECISION_INPUTS`` fields in their
        stored dtypes, ``features`` (len(features),) float32 when the trail has features, and
        ``scores`` (n_actions,) float32 and ``mask`` (n_actions,) bool when n_actions > 0."""
        return self._decisions.record_dtype({"scores": n_actions, "mask": n_actions})

    def add_market(self, cols: Mapping[str, NDArray[Any]]) -> None:
        """One step's market per order (``MARKET_INPUTS``); arrays are copied."""
        self._market.add(cols)

    def add_fills(self, events: NDArray[Any], order_idx: NDArray[np.integer] | None = None,
                  step: int | NDArray[np.integer] = -1) -> None:
        """Fill events (``FILL_EVENT_DTYPE``); ``order_idx`` (an array, ``order_idx[env]``) maps
        the batch's env to the run's order index (None: the same); ``step``: the decision step
        they belong to (one for all, or one per event; -1: unknown, then ``check_trail``
        compares that order's fills per order only). Copied."""
        if events.dtype is not FILL_DTYPE and events.dtype != FILL_DTYPE:
            raise ExecRLError(f"fills: events have dtype {events.dtype}, expected {FILL_DTYPE}")
        if not len(events):
            return
        orders = None if order_idx is None else order_idx[events["env"]].astype(np.int64)
        steps = step if isinstance(step, int) else np.array(step, dtype=np.int32)  # a copy
        self._fills.append((events.tobytes(), orders, steps))

    def add_incidents(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Incidents (``order_idx``, ``kind`` required; ``step``, ``t_s``, ``trigger``,
        ``detail``: a dict, stored as JSON)."""
        for row in rows:
            unknown = sorted(set(row) - set(sql.INCIDENT_FIELDS))
            missing = [k for k in ("order_idx", "kind") if k not in row]
            if unknown or missing or "seq" in row or "order_id" in row:
                raise ExecRLError(f"incident {dict(row)!r}: unknown or reserved fields "
                                  f"{unknown or ['seq/order_id']} / missing {missing}")
            record = {k: d for k, (_kind, d) in sql.INCIDENT_FIELDS.items()
                      if k not in ("seq", "order_id")}
            record.update(row)
            record["detail"] = sql.detail_json(record["detail"])
            self._incidents.append(record)

    # -- writing -------------------------------------------------------------------------
    def abort(self) -> None:
        """Drop everything collected; nothing is written."""
        self.closed = True

    def __enter__(self) -> AuditTrail:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self.closed:
            self.abort()
            if exc_type is None:
                raise ExecRLError("audit trail left without close(orders): nothing was written")

    def close(self, orders: pd.DataFrame) -> Path:
        """Write the trail: Parquet files and SQL rows, all or nothing. ``orders``: one row per
        parent order (``sql.ORDER_FIELDS``; ``order_idx``, ``order_id``, ``symbol``, ``side``,
        ``qty``, ``filled`` required). Returns the folder. After a failure nothing is written
        and the records are kept: ``close`` may be called again."""
        if self.closed:
            raise ExecRLError("audit trail already closed")
        self._check_folder()
        summary = _order_frame(orders)
        run_id = self.run_id or _derived_run_id(self.meta)
        tables = self._tables(run_id, summary)
        incident_rows = self._incident_frame(summary)
        created = self.created or dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        run_row = {
            "run_id": run_id, "created": created, "execrl_version": execrl.__version__,
            "meta": json.dumps(self.meta, sort_keys=True, default=sql._plain),
            "n_orders": len(summary), "n_decisions": tables["decisions"].num_rows,
            "n_children": tables["children"].num_rows, "n_fills": tables["fills"].num_rows,
            "n_market": tables["market"].num_rows, "n_incidents": len(incident_rows),
        }
        manifest = {
            "format": FORMAT, "version": FORMAT_VERSION, "run_id": run_id,
            "sql": "sqlite" if self.sql_url is None else sql.shown_url(self.sql_url),
            "rows": {name: tables[name.removesuffix(".parquet")].num_rows
                     for name in TRAIL_FILES},
            "features": list(self.features), "labels": {k: list(v)
                                                        for k, v in self.labels.items()},
        }
        committed_elsewhere = False
        try:
            with staged_folder(self.folder) as staging:
                for name in TRAIL_FILES:
                    _write(tables[name.removesuffix(".parquet")], staging / name)
                (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True)
                                                + "\n")
                url = self.sql_url or sql.normalise_url(f"sqlite:///{staging / SQLITE_FILE}")
                sql.write_sql(url, run_row, summary, incident_rows,
                              replace=self.overwrite)
                committed_elsewhere = self.sql_url is not None
        except InterruptedAfterSwap:  # complete and in place: only the interrupt is late
            self.closed, self.run_id = True, run_id
            raise
        except BaseException:
            if committed_elsewhere and self.sql_url is not None:  # the swap itself failed
                sql.delete_run(self.sql_url, run_id)
            raise
        self.closed, self.run_id = True, run_id
        return self.folder

    def _tables(self, run_id: str, summary: pd.DataFrame) -> dict[str, pa.Table]:
        dec = self._decisions.arrays()
        rows = self._decisions.rows
        per_order = _per_order(summary, dec["order_idx"])
        run = _constant(run_id, rows)
        columns: dict[str, pa.Array] = {"run_id": run, "order_id": per_order["order_id"],
                                        "order_idx": pa.array(dec["order_idx"])}
        columns["policy"] = per_order["policy"]
        columns["policy_hash"] = per_order["policy_hash"]
        columns["step"] = pa.array(dec["step"])
        columns["t_s"] = pa.array(dec["t_s"])
        columns["side"] = per_order["side"]
        for name in ("remaining_before", "working_before", "mid"):
            columns[name] = pa.array(dec[name])
        for j, feature in enumerate(self.features):
            columns[f"f_{feature}"] = pa.array(np.ascontiguousarray(dec["features"][:, j]))
        columns["action"] = pa.array(dec["action"])
        columns["scores"] = _lists(dec["scores"], "scores" in self._decisions._given,
                                   pa.float32())
        columns["mask"] = _lists(dec["mask"], "mask" in self._decisions._given, pa.bool_())
        columns["confidence"] = pa.array(dec["confidence"])
        columns["acting"] = _labels(dec["acting"], self.labels["acting"])
        columns["child_id"] = pa.array(dec["child_id"])
        columns["child_qty"] = pa.array(dec["child_qty"])
        sent = dec["child_qty"] > 0
        child_type = np.where(sent, dec["child_type"], -1).astype(np.int16)
        columns["child_type"] = _labels(child_type, self.labels["child_type"])
        for name in ("child_px", "ttl_ms", "guard_code", "guard_adjusted", "market_reject",
                     "filled_qty", "fill_px"):
            columns[name] = pa.array(dec[name])
        columns["watchdog_state"] = _labels(dec["watchdog_state"],
                                            self.labels["watchdog_state"])
        columns["trigger"] = _labels(dec["trigger"], self.labels["trigger"])
        columns["latency_us"] = pa.array(dec["latency_us"])
        columns["propensity"] = pa.array(dec["propensity"])
        decisions = pa.table(columns)

        idx = np.flatnonzero(sent)
        venue = _per_order(summary, dec["order_idx"][idx])["venue"]
        children = pa.table({
            "run_id": _constant(run_id, len(idx)), "parent_id": columns["order_id"].take(idx),
            "order_idx": pa.array(dec["order_idx"][idx]),
            "child_id": pa.array(dec["child_id"][idx]), "step": pa.array(dec["step"][idx]),
            "t_s": pa.array(dec["t_s"][idx]), "type": columns["child_type"].take(idx),
            "qty": pa.array(dec["child_qty"][idx]), "px": pa.array(dec["child_px"][idx]),
            "ttl_ms": pa.array(dec["ttl_ms"][idx]), "venue": venue,
            "guard_code": pa.array(dec["guard_code"][idx]),
            "market_reject": pa.array(dec["market_reject"][idx]),
        })

        events, fill_orders, fill_steps = _fill_arrays(self._fills)
        fills = pa.table({
            "run_id": _constant(run_id, len(events)),
            "order_id": _per_order(summary, fill_orders)["order_id"],
            "order_idx": pa.array(fill_orders), "step": pa.array(fill_steps),
            "child_id": pa.array(events["child_id"].astype(np.int64)),
            "t_s": pa.array(events["t"].astype(np.float64)),
            "qty": pa.array(events["qty"].astype(np.int64)),
            "px": pa.array(events["px"].astype(np.float64)),
            "passive": pa.array(events["passive"].astype(bool)),
            "fee": pa.array(events["fee"].astype(np.float64)),
        })

        mkt = self._market.arrays()
        market = pa.table({"run_id": _constant(run_id, self._market.rows),
                           **{name: pa.array(mkt[name]) for name in MARKET_INPUTS}})
        return {"decisions": decisions, "children": children, "fills": fills, "market": market}

    def _incident_frame(self, summary: pd.DataFrame) -> pd.DataFrame:
        frame = pd.DataFrame(self._incidents,
                             columns=[c for c in sql.INCIDENT_FIELDS if c not in
                                      ("seq", "order_id")])
        frame.insert(0, "seq", np.arange(len(frame), dtype=np.int64))
        ids = dict(zip(summary["order_idx"].tolist(), summary["order_id"].tolist(),
                       strict=True))
        frame.insert(2, "order_id", [ids.get(int(i), "") for i in frame["order_idx"]])
        return frame


def _fill_arrays(chunks: list[tuple[bytes, NDArray[np.int64] | None, Any]],
                 ) -> tuple[NDArray[Any], NDArray[np.int64], NDArray[np.int32]]:
    """The buffered fill events, the order each belongs to and its decision step."""
    events, orders, steps = [], [], []
    for raw, order_idx, step in chunks:
        batch = np.frombuffer(raw, dtype=FILL_DTYPE)
        events.append(batch)
        orders.append(batch["env"].astype(np.int64) if order_idx is None else order_idx)
        steps.append(np.broadcast_to(np.asarray(step, dtype=np.int32), batch.shape))
    if not events:
        return np.empty(0, FILL_DTYPE), np.empty(0, np.int64), np.empty(0, np.int32)
    return np.concatenate(events), np.concatenate(orders), np.concatenate(steps)


def _constant(value: str, n: int) -> pa.Array:
    return pa.array([value], pa.string()).take(pa.array(np.zeros(n, np.int32)))


def _derived_run_id(meta: Mapping[str, Any]) -> str:
    text = json.dumps(meta, sort_keys=True, default=sql._plain)
    return "run-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _order_frame(orders: pd.DataFrame) -> pd.DataFrame:
    """The per-order summary with every ``sql.ORDER_FIELDS`` column, typed, by order_idx."""
    if not isinstance(orders, pd.DataFrame):
        raise ExecRLError(f"orders must be a pandas DataFrame, not {type(orders).__name__}")
    unknown = sorted(set(orders.columns) - set(sql.ORDER_FIELDS))
    missing = [c for c, (_k, d) in sql.ORDER_FIELDS.items() if d is None
               and c not in orders.columns]
    if unknown or missing:
        raise ExecRLError(f"orders: unknown columns {unknown}, missing columns {missing}")
    out = pd.DataFrame(index=range(len(orders)))
    for column, (kind, default) in sql.ORDER_FIELDS.items():
        values = orders[column].to_numpy() if column in orders.columns else None
        if kind == "int":
            out[column] = (np.full(len(orders), default, np.int64) if values is None
                           else _ints(values, column))
        elif kind == "float":
            out[column] = (np.full(len(orders), default, np.float64) if values is None
                           else values.astype(np.float64))
        else:
            out[column] = ([default] * len(orders) if values is None
                           else [str(v) for v in values])
    if out["order_idx"].duplicated().any():
        dup = int(out["order_idx"][out["order_idx"].duplicated()].iloc[0])
        raise ExecRLError(f"orders: order_idx {dup} appears twice")
    return out.sort_values("order_idx", kind="stable").reset_index(drop=True)


def _ints(values: NDArray[Any], column: str) -> NDArray[np.int64]:
    as_float = values.astype(np.float64)
    if not np.all(np.isfinite(as_float)) or np.any(as_float != np.round(as_float)):
        raise ExecRLError(f"orders: column {column!r} must hold whole numbers")
    return values.astype(np.int64)


def _per_order(summary: pd.DataFrame, order_idx: NDArray[np.int64]) -> dict[str, pa.Array]:
    """Per-order string columns for rows keyed by order_idx (null for an unknown order).
    Plain string arrays (Parquet dictionary-encodes them itself): an Arrow dictionary column
    whose dictionary repeats values did not always write the same bytes."""
    keys = summary["order_idx"].to_numpy()
    pos = np.searchsorted(keys, order_idx)
    pos_clipped = np.minimum(pos, max(len(keys) - 1, 0))
    known = (pos < len(keys)) & (keys[pos_clipped] == order_idx) if len(keys) else \
        np.zeros(len(order_idx), bool)
    out = {}
    for column in (*_ORDER_COLUMNS, "venue"):
        values = pa.array(summary[column].tolist(), pa.string())
        out[column] = values.take(pa.array(pos_clipped.astype(np.int32), mask=~known))
    return out


# -- reading and checking ---------------------------------------------------------------------
def read_trail(folder: str | Path, sql_url: str | None = None) -> Trail:
    """A trail folder and its SQL rows as frames. The SQL half comes from ``sql_url`` or, for a
    trail written with the default, from the folder's SQLite file."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{str(folder)!r} is not an audit trail (no {MANIFEST})") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{str(manifest_path)!r} cannot be read: {exc}") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise ConfigError(f"{str(manifest_path)!r} is not an execrl audit trail of version "
                          f"{FORMAT_VERSION}")
    if sql_url is not None:
        url = sql.normalise_url(sql_url)
    elif manifest["sql"] == "sqlite":
        url = sql.normalise_url(f"sqlite:///{folder / SQLITE_FILE}")
    else:
        raise ConfigError(f"the trail's orders and incidents are in {manifest['sql']}; pass "
                          "its sql_url")
    run_id = str(manifest["run_id"])
    runs, orders, incidents = sql.read_sql(url, run_id)
    frames = {name.removesuffix(".parquet"): pq.read_table(folder / name).to_pandas()
              for name in TRAIL_FILES}
    return Trail(run_id=run_id, manifest=manifest, runs=runs, orders=orders,
                 incidents=incidents, features=tuple(manifest.get("features", ())), **frames)


def check_trail(trail: Trail, fee_tol: float = 1e-9) -> list[str]:
    """Problems that make the trail inconsistent, one line each (empty: consistent).

    Per order: the per-decision ``filled_qty`` sums to the fills' quantity and to the SQL
    ``orders.filled``; the fill count and fees to ``orders.fills`` / ``orders.fees``; the
    children to ``orders.child_orders``; steps run consecutively. Every child has its decision,
    every fill its child; every row its order and the run's id."""
    problems: list[str] = []
    dec, fills, children, orders = trail.decisions, trail.fills, trail.children, trail.orders
    if len(trail.runs) != 1:
        problems.append(f"runs: {len(trail.runs)} row(s) for run {trail.run_id!r}, expected 1")
    else:
        run = trail.runs.iloc[0]
        for name, count in (("n_orders", len(orders)), ("n_decisions", len(dec)),
                            ("n_children", len(children)), ("n_fills", len(fills)),
                            ("n_market", len(trail.market)),
                            ("n_incidents", len(trail.incidents))):
            if int(run[name]) != count:
                problems.append(f"runs.{name} is {int(run[name])}, the trail has {count}")
    for name, frame in (("decisions", dec), ("children", children), ("fills", fills),
                        ("market", trail.market), ("orders", orders),
                        ("incidents", trail.incidents)):
        if len(frame) and set(frame["run_id"].unique().tolist()) != {trail.run_id}:
            problems.append(f"{name}: rows of another run than {trail.run_id!r}")
    known = orders["order_idx"].to_numpy()
    for name, frame in (("decisions", dec), ("fills", fills), ("market", trail.market),
                        ("incidents", trail.incidents)):
        stray = np.unique(frame["order_idx"][~frame["order_idx"].isin(known)]).tolist()
        if stray:
            problems.append(f"{name}: order_idx {stray[:5]} not in orders")

    tally = orders.set_index("order_idx")[["order_id", "qty", "filled", "fills",
                                           "child_orders", "fees"]].join([
        dec.groupby("order_idx")["filled_qty"].sum().rename("dec_filled"),
        fills.groupby("order_idx")["qty"].sum().rename("fill_qty"),
        fills.groupby("order_idx").size().rename("fill_n"),
        fills.groupby("order_idx")["fee"].sum().rename("fill_fee"),
        children.groupby("order_idx").size().rename("n_children"),
    ])
    tally = tally.fillna({c: 0 for c in ("dec_filled", "fill_qty", "fill_n", "fill_fee",
                                         "n_children")})
    fee_ok = np.isclose(tally["fill_fee"], tally["fees"], rtol=fee_tol, atol=fee_tol)
    bad = ((tally["dec_filled"] != tally["filled"]) | (tally["fill_qty"] != tally["filled"])
           | (tally["fill_n"] != tally["fills"]) | (tally["n_children"] != tally["child_orders"])
           | ~fee_ok | (tally["filled"] > tally["qty"]))
    for idx, row in tally[bad.to_numpy()].iterrows():  # only the orders with a problem
        who = f"order {row['order_id']} (idx {idx})"
        d, f, filled = int(row["dec_filled"]), int(row["fill_qty"]), int(row["filled"])
        if not d == f == filled:
            problems.append(f"{who}: filled {d} in decisions, {f} in fills, {filled} in orders")
        if int(row["fill_n"]) != int(row["fills"]):
            problems.append(f"{who}: {int(row['fill_n'])} fills on record, orders says "
                            f"{int(row['fills'])}")
        if int(row["n_children"]) != int(row["child_orders"]):
            problems.append(f"{who}: {int(row['n_children'])} child orders on record, "
                            f"orders says {int(row['child_orders'])}")
        if not math.isclose(row["fill_fee"], row["fees"], rel_tol=fee_tol, abs_tol=fee_tol):
            problems.append(f"{who}: fees {float(row['fill_fee'])!r} in fills, "
                            f"{float(row['fees'])!r} in orders")
        if filled > int(row["qty"]):
            problems.append(f"{who}: filled {filled} above its qty {int(row['qty'])}")

    if len(dec):
        ordered = dec[["order_idx", "step"]].sort_values(["order_idx", "step"], kind="stable")
        gaps = ordered.groupby("order_idx")["step"].diff().dropna()
        for idx in sorted(set(ordered.loc[gaps.index[gaps != 1], "order_idx"].tolist())):
            steps = ordered.loc[ordered["order_idx"] == idx, "step"].tolist()
            problems.append(f"order idx {idx}: decision steps not consecutive ({steps[:8]}...)")
    sent = dec.loc[dec["child_qty"] > 0, ["order_idx", "step", "child_id"]]
    for _i, key in _missing(children, sent, ["order_idx", "step", "child_id"]).iterrows():
        problems.append(f"child {key['child_id']} of order idx {key['order_idx']} (step "
                        f"{key['step']}) has no decision that sent it")
    dup = children.duplicated(["order_idx", "child_id"])
    if dup.any():
        problems.append(f"children: child_id sent twice in {int(dup.sum())} row(s)")
    orphans = _missing(fills, children, ["order_idx", "child_id"])
    if len(orphans):
        problems.append(f"fills: {len(orphans)} fill(s) of a child never sent, e.g. child "
                        f"{orphans['child_id'].iloc[0]} of order idx "
                        f"{orphans['order_idx'].iloc[0]}")
    untimed = fills.loc[fills["step"] < 0, "order_idx"].unique()
    timed = fills[~fills["order_idx"].isin(untimed)]  # orders whose every fill has its step
    if len(timed):
        per_step = timed.groupby(["order_idx", "step"])["qty"].sum()
        dec_step = dec[dec["order_idx"].isin(timed["order_idx"].unique())].groupby(
            ["order_idx", "step"])["filled_qty"].sum()
        joined = pd.concat([per_step.rename("fills"), dec_step.rename("decision")], axis=1)
        joined = joined.fillna(0)
        bad = joined[joined["fills"] != joined["decision"]]
        for (idx, step), row in bad.head(5).iterrows():
            problems.append(f"order idx {idx} step {step}: decision filled "
                            f"{int(row['decision'])}, fills say {int(row['fills'])}")
    return problems


def _missing(rows: pd.DataFrame, among: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The ``keys`` of ``rows`` that no row of ``among`` has."""
    joined = rows[keys].merge(among[keys].drop_duplicates(), on=keys, how="left",
                              indicator=True)
    return joined.loc[joined["_merge"] == "left_only", keys]
