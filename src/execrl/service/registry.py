"""The policy registry: every trained checkpoint by its policy hash, its state, who moved it, and
the flags that hand its flow to the fallback (seed 001 §6 / §12 / §14, seed 002 §5).

States and the actions between them (``TRANSITIONS``)::

    candidate --promote--> shadow --promote--> canary --request + 2 approvals--> live
    live --(another policy goes live in its scope)--> retired
    live --rollback--> quarantined, and the scope's last retired ("green") policy --> live
    candidate / shadow / canary / live / retired --quarantine--> quarantined
    quarantined --release--> candidate

One live policy per scope. A scope is a symbol (``"XYZ"``) or ``"*"``, the desk-wide policy for
every symbol without one of its own: ``live_policy(symbol)`` is what the service routes a parent
order to. A database index holds the rule, so two promotions racing cannot both win.

4-eyes: promotion to live is a request (by a quant or a PM) for one (policy hash, target state)
that two different users holding the PM or risk-officer role approve, neither of them the
requester; the second approval promotes, in the same transaction. A request expires the moment
its policy changes state. Every change here (register, promote, request, approve, rollback,
quarantine, release, flag flips, users) writes an audit row: who, when, what, from -> to, why.

Storage: SQLAlchemy Core, SQLite by default (a file), PostgreSQL by URL. Each change is one
transaction that first locks the policy's row (``SELECT ... FOR UPDATE``; SQLite serialises
writers with ``BEGIN IMMEDIATE``), and the state update itself is conditional on the state
sequence number read, so concurrent approvals promote once.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from execrl.domain.errors import ExecRLError
from execrl.executor.sql import normalise_url, shown_url
from execrl.service.access import (
    APPROVER_ROLES,
    SYSTEM,
    AccessDenied,
    User,
    check_role,
    check_user_name,
    new_token,
    require,
    split_token,
    token_matches,
)

STATES = ("candidate", "shadow", "canary", "live", "retired", "quarantined")
#: states whose policy may decide (shadow: counterfactually) unless a flag sends it to fallback
ACTIVE_STATES = frozenset({"shadow", "canary", "live"})
#: action -> {from state: to state}; anything else is refused with one line
TRANSITIONS: dict[str, dict[str, str]] = {
    "promote": {"candidate": "shadow", "shadow": "canary", "canary": "live"},
    "retire": {"live": "retired"},  # only as the scope's next live policy goes in
    "rollback": {"live": "quarantined", "retired": "live"},
    "quarantine": {s: "quarantined" for s in ("candidate", "shadow", "canary", "live",
                                               "retired")},
    "release": {"quarantined": "candidate"},
}
#: approvals a promotion to each target state needs (4-eyes for live)
APPROVALS_NEEDED = {"live": 2}
ALL_SCOPES = "*"
#: the flag target that sends every policy to the fallback
ALL_POLICIES = "*"
#: the automatic quarantine: this many consecutive days worse than TWAP (seed 004 §6)
UNDERPERFORMANCE_DAYS = 5
DEFAULT_URL_ENV = "EXECRL_REGISTRY_URL"
DEFAULT_URL = "sqlite:///execrl-registry.sqlite"

metadata = sa.MetaData()

users = sa.Table(
    "registry_users", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("created", sa.String(32), nullable=False),
    sa.Column("created_by", sa.String(64), nullable=False),
)
tokens = sa.Table(
    "registry_tokens", metadata,
    sa.Column("token_id", sa.String(32), primary_key=True),
    sa.Column("user_name", sa.String(64), nullable=False, index=True),
    sa.Column("salt", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(128), nullable=False),  # scrypt of the secret; never the token
    sa.Column("created", sa.String(32), nullable=False),
)
policies = sa.Table(
    "registry_policies", metadata,
    sa.Column("policy_hash", sa.String(64), primary_key=True),
    sa.Column("scope", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("state_seq", sa.BigInteger, nullable=False),  # +1 on every state change
    sa.Column("changed_event", sa.BigInteger, nullable=False),  # audit seq of that change
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("algo", sa.String(64), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("training", sa.Text, nullable=False),  # config.json, JSON
    sa.Column("features", sa.Text, nullable=False),  # features.json, JSON ("null" if none)
    sa.Column("evaluation", sa.Text, nullable=False),  # from results.json, JSON ("null")
    sa.Column("registered_by", sa.String(64), nullable=False),
    sa.Column("registered_at", sa.String(32), nullable=False),
)
# the one-live-policy-per-scope rule, held by the database itself
sa.Index("uq_registry_live_scope", policies.c.scope, unique=True,
         sqlite_where=policies.c.state == "live", postgresql_where=policies.c.state == "live")
requests = sa.Table(
    "registry_requests", metadata,
    sa.Column("request_id", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
              primary_key=True, autoincrement=True),
    sa.Column("policy_hash", sa.String(64), nullable=False, index=True),
    sa.Column("target", sa.String(16), nullable=False),
    sa.Column("requested_by", sa.String(64), nullable=False),
    sa.Column("requested_at", sa.String(32), nullable=False),
    sa.Column("state_seq", sa.BigInteger, nullable=False),  # the policy's, when requested
    sa.Column("status", sa.String(16), nullable=False),  # open, promoted, expired
    sa.Column("reason", sa.Text, nullable=False),
)
approvals = sa.Table(
    "registry_approvals", metadata,
    sa.Column("request_id", sa.BigInteger, primary_key=True),
    sa.Column("approver", sa.String(64), primary_key=True),
    sa.Column("approver_role", sa.String(32), nullable=False),
    sa.Column("approved_at", sa.String(32), nullable=False),
)
flags = sa.Table(
    "registry_flags", metadata,
    sa.Column("target", sa.String(64), primary_key=True),  # a policy hash or "*"
    sa.Column("fallback", sa.Boolean, nullable=False),
    sa.Column("updated_by", sa.String(64), nullable=False),
    sa.Column("updated_at", sa.String(32), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)
events = sa.Table(
    "registry_events", metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("at", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("policy_hash", sa.String(64), nullable=False),  # "" / "*" where none / all
    sa.Column("scope", sa.String(64), nullable=False),
    sa.Column("from_state", sa.String(16), nullable=False),
    sa.Column("to_state", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),  # JSON, sorted keys
)
sa.Index("ix_registry_events_policy", events.c.policy_hash, events.c.seq)


class RegistryError(ExecRLError, ValueError):
    """A registry action that is not legal now: one line naming the policy, its state, the
    action."""


@dataclass(frozen=True)
class PolicyRecord:
    policy_hash: str
    scope: str
    state: str
    state_seq: int
    name: str
    algo: str
    path: str
    training: dict[str, Any]
    features: dict[str, Any] | None
    evaluation: dict[str, Any] | None
    registered_by: str
    registered_at: str

    @property
    def short(self) -> str:
        return self.policy_hash[:12]


@dataclass(frozen=True)
class Request:
    request_id: int
    policy_hash: str
    target: str
    requested_by: str
    requested_at: str
    status: str
    approvers: tuple[str, ...]


@dataclass(frozen=True)
class Approval:
    """What one approval did: the request it counted towards and whether it promoted."""

    request: Request
    promoted: bool
    retired: str | None  # the scope's previous live policy, when this approval promoted


@dataclass(frozen=True)
class DailyResult:
    """One trading day of the live policy against TWAP on the same orders (paired, in bps:
    policy minus TWAP, so positive costs more); ``ci95`` None where the day had too few orders
    for an interval."""

    day: str
    diff_bps_mean: float
    ci95: tuple[float, float] | None

    @property
    def worse_than_twap(self) -> bool:
        """The whole 95% interval above zero: the policy cost more than TWAP that day, beyond
        noise. A day without an interval is no evidence either way and breaks a streak."""
        return self.ci95 is not None and self.ci95[0] > 0.0


def parse_daily(rows: Iterable[Mapping[str, Any] | DailyResult]) -> list[DailyResult]:
    """Daily paired results (``day``, ``diff_bps_mean``, ``ci95`` as ``[lo, hi]`` or null), in
    day order; a bad entry is one line naming its index and field."""
    out: list[DailyResult] = []
    for i, row in enumerate(rows):
        if isinstance(row, DailyResult):
            out.append(row)
            continue
        if not isinstance(row, Mapping):
            raise RegistryError(f"daily result {i} is {type(row).__name__}, not an object")
        day = str(row.get("day", i))
        mean = row.get("diff_bps_mean")
        if isinstance(mean, bool) or not isinstance(mean, int | float) or not math.isfinite(mean):
            raise RegistryError(f"daily result {i} ({day}): diff_bps_mean = {mean!r} must be a "
                                "finite number")
        ci = row.get("ci95")
        if ci is not None:
            ok = (isinstance(ci, list | tuple) and len(ci) == 2
                  and all(isinstance(v, int | float) and not isinstance(v, bool)
                          and math.isfinite(v) for v in ci) and ci[0] <= ci[1])
            if not ok:
                raise RegistryError(f"daily result {i} ({day}): ci95 = {ci!r} must be [lo, hi] "
                                    "with finite lo <= hi, or null")
            ci = (float(ci[0]), float(ci[1]))
        out.append(DailyResult(day, float(mean), ci))
    days = [r.day for r in out]
    if all(isinstance(d, str) and len(d) == 10 for d in days):  # ISO dates: must be in order
        for a, b in itertools.pairwise(days):
            if not a < b:
                raise RegistryError(f"daily results are not in day order: {a} then {b}")
    return out


def underperformance_streak(rows: Iterable[Mapping[str, Any] | DailyResult],
                            days: int = UNDERPERFORMANCE_DAYS) -> list[DailyResult] | None:
    """The first ``days`` consecutive days on which the policy was worse than TWAP, or None."""
    run: list[DailyResult] = []
    for row in parse_daily(rows):
        run = [*run, row] if row.worse_than_twap else []
        if len(run) == days:
            return run
    return None


def default_url() -> str:
    return os.environ.get(DEFAULT_URL_ENV) or DEFAULT_URL


def _engine(url: str) -> sa.Engine:
    parsed = normalise_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(parsed, pool_pre_ping=True)
    engine = sa.create_engine(parsed, connect_args={"timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's BEGIN below, not pysqlite's

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        # a change takes the write lock before its first read (one writer at a time, so the
        # state it read is the state it changes); a read takes none
        immediate = conn.get_execution_options().get("registry_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


class Registry:
    """The registry in one database (``url``: SQLAlchemy URL; default ``$EXECRL_REGISTRY_URL``
    or ``sqlite:///execrl-registry.sqlite``). ``actor`` arguments are ``User`` objects, normally
    from ``authenticate``; each action re-reads the actor's row, so a role changed or a user
    deactivated since counts at once."""

    def __init__(self, url: str | None = None, *, clock: Callable[[], datetime] | None = None):
        self.url = url or default_url()
        try:
            self.engine = _engine(self.url)
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as exc:
            raise RegistryError(f"registry URL {self.url!r} is not usable: "
                                f"{_db_reason(exc)}") from None
        self._clock = clock or (lambda: datetime.now(UTC))
        try:
            metadata.create_all(self.engine, checkfirst=True)
        except sa.exc.SQLAlchemyError as exc:
            raise RegistryError(f"registry database {self.shown_url!r} cannot be opened: "
                                f"{_db_reason(exc)}") from None

    @property
    def shown_url(self) -> str:
        return shown_url(self.engine.url)

    def close(self) -> None:
        self.engine.dispose()

    def _now(self) -> str:
        return self._clock().astimezone(UTC).isoformat(timespec="microseconds")

    @contextmanager
    def _tx(self) -> Iterator[sa.Connection]:
        try:
            with self.engine.connect() as conn:
                conn.execution_options(registry_write=True)
                with conn.begin():
                    yield conn
        except sa.exc.IntegrityError as exc:
            raise RegistryError(f"registry change refused by the database (a concurrent change "
                                f"won; try again): {_db_reason(exc)}") from None
        except sa.exc.OperationalError as exc:
            raise RegistryError(f"registry database {self.shown_url!r}: "
                                f"{_db_reason(exc)}") from None

    # -- audit -------------------------------------------------------------------------------
    def _event(self, conn: sa.Connection, actor: str, action: str, *, policy_hash: str = "",
               scope: str = "", from_state: str = "", to_state: str = "", reason: str = "",
               **detail: Any) -> int:
        result = conn.execute(events.insert().values(
            at=self._now(), actor=actor, action=action, policy_hash=policy_hash, scope=scope,
            from_state=from_state, to_state=to_state, reason=reason, detail=_dump(detail)))
        return int(result.inserted_primary_key[0])

    def events(self, policy_hash: str | None = None) -> list[dict[str, Any]]:
        """The audit log, oldest first (one policy's, or all)."""
        query = sa.select(events).order_by(events.c.seq)
        if policy_hash is not None:
            query = query.where(events.c.policy_hash == policy_hash)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [{**row, "detail": json.loads(row["detail"])} for row in rows]

    # -- users and tokens --------------------------------------------------------------------
    def _actor(self, conn: sa.Connection, actor: User, action: str) -> User:
        row = conn.execute(sa.select(users).where(users.c.name == actor.name)).mappings().first()
        if row is None:
            raise AccessDenied(f"user {actor.name!r} is not a registry user: cannot {action}")
        current = User(row["name"], row["role"], bool(row["active"]))
        require(current, action)
        return current

    def add_user(self, actor: User | None, name: str, role: str) -> str:
        """Add a user and return their first token (shown once, stored hashed). With no users
        yet, ``actor`` may be None to create the first admin; otherwise an admin adds users."""
        check_user_name(name)
        check_role(role)
        with self._tx() as conn:
            if actor is None:
                if conn.execute(sa.select(sa.func.count()).select_from(users)).scalar_one():
                    raise AccessDenied("the registry has users: adding one needs an admin's "
                                       "token")
                if role != "admin":
                    raise AccessDenied(f"the first user must be an admin, not {role!r}")
                by = name
            else:
                by = self._actor(conn, actor, "users").name
            if conn.execute(sa.select(users.c.name).where(users.c.name == name)).first():
                raise RegistryError(f"user {name!r} exists already")
            conn.execute(users.insert().values(name=name, role=role, active=True,
                                               created=self._now(), created_by=by))
            token = self._new_token(conn, name)
            self._event(conn, by, "add_user", to_state=role, user=name, role=role)
        return token

    def issue_token(self, actor: User, name: str) -> str:
        """A further token for ``name`` (an admin's action)."""
        with self._tx() as conn:
            by = self._actor(conn, actor, "users").name
            self._user_row(conn, name)
            token = self._new_token(conn, name)
            self._event(conn, by, "issue_token", user=name)
        return token

    def deactivate(self, actor: User, name: str, reason: str = "") -> None:
        with self._tx() as conn:
            by = self._actor(conn, actor, "users").name
            row = self._user_row(conn, name)
            conn.execute(users.update().where(users.c.name == name).values(active=False))
            self._event(conn, by, "deactivate_user", from_state=row["role"],
                        to_state="inactive", reason=reason, user=name)

    def _new_token(self, conn: sa.Connection, name: str) -> str:
        token, token_id, salt, digest = new_token()
        conn.execute(tokens.insert().values(token_id=token_id, user_name=name, salt=salt,
                                            hash=digest, created=self._now()))
        return token

    def _user_row(self, conn: sa.Connection, name: str) -> Any:
        row = conn.execute(sa.select(users).where(users.c.name == name)).mappings().first()
        if row is None:
            raise RegistryError(f"user {name!r} does not exist")
        return row

    def user(self, name: str) -> User:
        with self.engine.connect() as conn:
            row = self._user_row(conn, name)
        return User(row["name"], row["role"], bool(row["active"]))

    def users(self) -> list[User]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(users).order_by(users.c.name)).mappings().all()
        return [User(r["name"], r["role"], bool(r["active"])) for r in rows]

    def authenticate(self, token: str) -> User:
        """The active user a token belongs to; anything else is one ``AccessDenied`` line that
        does not say which part was wrong."""
        token_id, secret = split_token(token)
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(tokens.c.salt, tokens.c.hash, users.c.name, users.c.role,
                          users.c.active)
                .join(users, users.c.name == tokens.c.user_name)
                .where(tokens.c.token_id == token_id)).mappings().first()
        if row is None or not token_matches(secret, row["salt"], row["hash"]):
            raise AccessDenied("token is not valid")
        if not row["active"]:
            raise AccessDenied(f"user {row['name']!r} is deactivated")
        return User(row["name"], row["role"], True)

    def authorize(self, token: str, action: str) -> User:
        """What the HTTP API calls first: the token's user, if their role may ``action``
        (``view`` for the read-only routes); otherwise one ``AccessDenied`` line."""
        user = self.authenticate(token)
        require(user, action)
        return user

    # -- policies ----------------------------------------------------------------------------
    def register(self, actor: User, folder: Path | str, results: Path | str | None = None,
                 scope: str = ALL_SCOPES, reason: str = "") -> PolicyRecord:
        """Add the checkpoint in ``folder`` (an ``execrl train`` folder, verified against its
        hash) as a candidate for ``scope``, with the evaluation of it in ``results`` (an
        ``execrl evaluate`` results.json whose provenance names this policy hash)."""
        from execrl.agents.export import NumpyPolicy

        scope = _check_scope(scope)
        policy = NumpyPolicy.load(Path(folder), checkpoint=True)
        digest = policy.policy_hash()
        evaluation = None if results is None else _evaluation_of(Path(results), digest)
        schema = policy.feature_schema
        features = None if schema is None else schema.model_dump(mode="json")
        with self._tx() as conn:
            by = self._actor(conn, actor, "register").name
            old = conn.execute(sa.select(policies.c.state, policies.c.scope)
                               .where(policies.c.policy_hash == digest)).first()
            if old is not None:
                raise RegistryError(f"policy {digest[:12]} is registered already ({old.state} in "
                                    f"scope {old.scope!r})")
            seq = self._event(conn, by, "register", policy_hash=digest, scope=scope,
                              to_state="candidate", reason=reason, path=str(folder),
                              results=None if results is None else str(results))
            conn.execute(policies.insert().values(
                policy_hash=digest, scope=scope, state="candidate", state_seq=0,
                changed_event=seq, name=policy.name, algo=str(policy.training.get("algo", "")),
                path=str(Path(folder).resolve()), training=_dump(policy.training),
                features=_dump(features), evaluation=_dump(evaluation), registered_by=by,
                registered_at=self._now()))
        return self.get(digest)

    def resolve(self, prefix: str) -> str:
        """The one registered hash starting with ``prefix`` (at least 6 hex digits)."""
        prefix = prefix.strip().lower()
        if len(prefix) < 6 or any(c not in "0123456789abcdef" for c in prefix):
            raise RegistryError(f"policy {prefix!r} is not a policy hash (or a prefix of at "
                                "least 6 hex digits)")
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(policies.c.policy_hash)
                                 .where(policies.c.policy_hash.startswith(prefix))
                                 .limit(2)).scalars().all()
        if not found:
            raise RegistryError(f"policy {prefix!r} is not registered")
        if len(found) > 1:
            raise RegistryError(f"policy {prefix!r} is ambiguous: give more of the hash")
        return str(found[0])

    def get(self, policy_hash: str) -> PolicyRecord:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(policies).where(policies.c.policy_hash == policy_hash)
                               ).mappings().first()
        if row is None:
            raise RegistryError(f"policy {policy_hash[:12]!r} is not registered")
        return _record(row)

    def policies(self, state: str | None = None, scope: str | None = None
                 ) -> list[PolicyRecord]:
        query = sa.select(policies).order_by(policies.c.scope, policies.c.registered_at)
        if state is not None:
            if state not in STATES:
                raise RegistryError(f"state {state!r} is unknown; states: {', '.join(STATES)}")
            query = query.where(policies.c.state == state)
        if scope is not None:
            query = query.where(policies.c.scope == scope)
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(query).mappings().all()]

    def live_policy(self, symbol: str) -> PolicyRecord | None:
        """The live policy an order in ``symbol`` goes to: the symbol's own, else the desk-wide
        one (scope ``*``), else None (the fallback). A symbol whose own policy was quarantined
        goes to the desk-wide one if there is one (it passed 4-eyes too). The caller still asks
        ``fallback_flag`` of the answer."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(policies).where(
                policies.c.state == "live", policies.c.scope.in_([symbol, ALL_SCOPES]))
            ).mappings().all()
        by_scope = {r["scope"]: r for r in rows}
        row = by_scope.get(symbol, by_scope.get(ALL_SCOPES))
        return None if row is None else _record(row)

    def requests(self, policy_hash: str | None = None) -> list[Request]:
        with self.engine.connect() as conn:
            query = sa.select(requests).order_by(requests.c.request_id)
            if policy_hash is not None:
                query = query.where(requests.c.policy_hash == policy_hash)
            return [self._request(conn, r) for r in conn.execute(query).mappings().all()]

    def _request(self, conn: sa.Connection, row: Any) -> Request:
        names = conn.execute(sa.select(approvals.c.approver)
                             .where(approvals.c.request_id == row["request_id"])
                             .order_by(approvals.c.approved_at)).scalars().all()
        return Request(int(row["request_id"]), row["policy_hash"], row["target"],
                       row["requested_by"], row["requested_at"], row["status"], tuple(names))

    # -- state changes -----------------------------------------------------------------------
    def _lock(self, conn: sa.Connection, policy_hash: str) -> Any:
        row = conn.execute(sa.select(policies).where(policies.c.policy_hash == policy_hash)
                           .with_for_update()).mappings().first()
        if row is None:
            raise RegistryError(f"policy {policy_hash[:12]!r} is not registered")
        return row

    def _move(self, conn: sa.Connection, row: Any, action: str, actor: str, reason: str,
              **detail: Any) -> str:
        """Change ``row``'s state by ``action`` (refused unless legal from its state), expire
        its open requests, write the audit row. The update is conditional on the state
        sequence number read, so a concurrent change makes this one fail, not repeat."""
        state, digest = row["state"], row["policy_hash"]
        target = TRANSITIONS[action].get(state)
        if target is None:
            raise RegistryError(_illegal(digest, state, action))
        seq = self._event(conn, actor, action, policy_hash=digest, scope=row["scope"],
                          from_state=state, to_state=target, reason=reason, **detail)
        done = conn.execute(policies.update().where(
            policies.c.policy_hash == digest, policies.c.state_seq == row["state_seq"])
            .values(state=target, state_seq=row["state_seq"] + 1, changed_event=seq))
        if done.rowcount != 1:
            raise RegistryError(f"policy {digest[:12]} changed state meanwhile: try again")
        expired = conn.execute(requests.update().where(
            requests.c.policy_hash == digest, requests.c.status == "open")
            .values(status="expired"))
        if expired.rowcount:
            self._event(conn, actor, "expire_requests", policy_hash=digest, scope=row["scope"],
                        from_state=state, to_state=target,
                        reason=f"policy went {state} -> {target}", requests=expired.rowcount)
        return target

    def promote(self, actor: User, policy_hash: str, reason: str = "") -> PolicyRecord:
        """candidate -> shadow or shadow -> canary. Live needs ``request`` and two
        ``approve``s."""
        with self._tx() as conn:
            by = self._actor(conn, actor, "promote").name
            row = self._lock(conn, policy_hash)
            target = TRANSITIONS["promote"].get(row["state"])
            if target in APPROVALS_NEEDED:
                raise RegistryError(
                    f"policy {policy_hash[:12]} is {row['state']}: promotion to {target} needs a "
                    f"request and {APPROVALS_NEEDED[target]} approvals by PM / risk officers "
                    "(execrl registry request, then approve)")
            self._move(conn, row, "promote", by, reason)
        return self.get(policy_hash)

    def request(self, actor: User, policy_hash: str, target: str = "live",
                reason: str = "") -> Request:
        """Ask for the promotion of ``policy_hash`` to ``target`` (live): the request that two
        approvers must approve while the policy stays in its current state."""
        with self._tx() as conn:
            by = self._actor(conn, actor, "request").name
            row = self._lock(conn, policy_hash)
            if target not in APPROVALS_NEEDED:
                raise RegistryError(f"promotion to {target!r} needs no request: only "
                                    f"{', '.join(APPROVALS_NEEDED)} is approved (promote it)")
            if TRANSITIONS["promote"].get(row["state"]) != target:
                raise RegistryError(f"policy {policy_hash[:12]} is {row['state']}: cannot "
                                    f"request promotion to {target} (only from canary)")
            open_ = conn.execute(sa.select(requests).where(
                requests.c.policy_hash == policy_hash, requests.c.target == target,
                requests.c.status == "open")).mappings().first()
            if open_ is not None:
                raise RegistryError(f"policy {policy_hash[:12]} has an open request "
                                    f"{open_['request_id']} for {target} by "
                                    f"{open_['requested_by']!r} already")
            result = conn.execute(requests.insert().values(
                policy_hash=policy_hash, target=target, requested_by=by,
                requested_at=self._now(), state_seq=row["state_seq"], status="open",
                reason=reason))
            request_id = int(result.inserted_primary_key[0])
            self._event(conn, by, "request", policy_hash=policy_hash, scope=row["scope"],
                        from_state=row["state"], to_state=target, reason=reason,
                        request_id=request_id)
            made = conn.execute(sa.select(requests).where(requests.c.request_id == request_id)
                                ).mappings().one()
            return self._request(conn, made)

    def approve(self, actor: User, policy_hash: str, target: str = "live",
                reason: str = "") -> Approval:
        """Approve the open request to promote ``policy_hash`` to ``target``. The requester
        cannot approve, nobody approves twice, and the approval that makes
        ``APPROVALS_NEEDED`` valid ones (approvers still active in an approver role) promotes,
        retiring the scope's live policy, in the same transaction."""
        with self._tx() as conn:
            me = self._actor(conn, actor, "approve")
            row = self._lock(conn, policy_hash)
            req = conn.execute(sa.select(requests).where(
                requests.c.policy_hash == policy_hash, requests.c.target == target,
                requests.c.status == "open")).mappings().first()
            if req is None:
                raise RegistryError(self._no_open_request(conn, row, target))
            rid = int(req["request_id"])
            if req["state_seq"] != row["state_seq"]:  # _move expires them; belt and braces
                raise RegistryError(f"request {rid} expired: policy {policy_hash[:12]} changed "
                                    "state after it was made")
            if req["requested_by"] == me.name:
                raise AccessDenied(f"user {me.name!r} requested promotion {rid} of "
                                   f"{policy_hash[:12]} to {target}: the requester cannot "
                                   "approve it (4-eyes)")
            if conn.execute(sa.select(approvals.c.approver).where(
                    approvals.c.request_id == rid, approvals.c.approver == me.name)).first():
                raise AccessDenied(f"user {me.name!r} approved request {rid} already: the "
                                   "second approval must come from someone else (4-eyes)")
            conn.execute(approvals.insert().values(request_id=rid, approver=me.name,
                                                   approver_role=me.role,
                                                   approved_at=self._now()))
            self._event(conn, me.name, "approve", policy_hash=policy_hash, scope=row["scope"],
                        from_state=row["state"], to_state=target, reason=reason,
                        request_id=rid, role=me.role)
            valid = self._valid_approvers(conn, rid, req["requested_by"])
            retired = None
            promoted = len(valid) >= APPROVALS_NEEDED[target]
            if promoted:  # closed first, so that the state change does not expire it
                conn.execute(requests.update().where(requests.c.request_id == rid)
                             .values(status="promoted"))
                retired = self._go_live(conn, row, me.name, reason or f"request {rid} approved",
                                        request_id=rid, approvers=valid)
            final = conn.execute(sa.select(requests).where(requests.c.request_id == rid)
                                 ).mappings().one()
            return Approval(self._request(conn, final), promoted, retired)

    def _valid_approvers(self, conn: sa.Connection, rid: int, requester: str) -> list[str]:
        rows = conn.execute(sa.select(users.c.name).join(
            approvals, approvals.c.approver == users.c.name).where(
            approvals.c.request_id == rid, users.c.active.is_(True),
            users.c.role.in_(sorted(APPROVER_ROLES)), users.c.name != requester)).scalars()
        return sorted(set(rows))

    def _no_open_request(self, conn: sa.Connection, row: Any, target: str) -> str:
        last = conn.execute(sa.select(requests).where(
            requests.c.policy_hash == row["policy_hash"], requests.c.target == target)
            .order_by(requests.c.request_id.desc())).mappings().first()
        short = row["policy_hash"][:12]
        if last is not None and last["status"] == "expired":
            return (f"request {last['request_id']} to promote {short} to {target} expired when "
                    f"the policy changed state (now {row['state']}): request again")
        return f"policy {short} ({row['state']}) has no open request for promotion to {target}"

    def _go_live(self, conn: sa.Connection, row: Any, actor: str, reason: str,
                 action: str = "promote", **detail: Any) -> str | None:
        """``row`` live in its scope; the scope's current live policy retired first."""
        current = conn.execute(sa.select(policies).where(
            policies.c.scope == row["scope"], policies.c.state == "live",
            policies.c.policy_hash != row["policy_hash"]).with_for_update()).mappings().first()
        retired = None
        if current is not None:
            self._move(conn, current, "retire", actor,
                       f"{row['policy_hash'][:12]} goes live in scope {row['scope']!r}")
            retired = str(current["policy_hash"])
        self._move(conn, row, action, actor, reason, **detail)
        return retired

    def rollback(self, actor: User, scope: str = ALL_SCOPES, reason: str = ""
                 ) -> tuple[str | None, str]:
        """The scope's live policy (if any) quarantined and its last green version (the most
        recently retired, never quarantined since) live again, without new approvals: it was
        approved once. Returns (quarantined hash or None, reinstated hash)."""
        scope = _check_scope(scope)
        with self._tx() as conn:
            by = self._actor(conn, actor, "rollback").name
            live = conn.execute(sa.select(policies).where(
                policies.c.scope == scope, policies.c.state == "live").with_for_update()
            ).mappings().first()
            green = conn.execute(sa.select(policies).where(
                policies.c.scope == scope, policies.c.state == "retired")
                .order_by(policies.c.changed_event.desc()).limit(1).with_for_update()
            ).mappings().first()
            if green is None:
                now = f"{live['policy_hash'][:12]} is live" if live is not None else "none live"
                raise RegistryError(f"scope {scope!r} has no green version to roll back to "
                                    f"(no previously live policy outside quarantine; {now})")
            why = reason or "rollback"
            out = None
            if live is not None:
                self._move(conn, live, "rollback", by, why, reinstated=green["policy_hash"])
                out = str(live["policy_hash"])
            self._move(conn, green, "rollback", by, why, replaced=out)
        return out, str(green["policy_hash"])

    def quarantine(self, actor: User, policy_hash: str, reason: str = "") -> PolicyRecord:
        """Out of every state that trades; its flow goes to the fallback (``fallback_flag``)."""
        with self._tx() as conn:
            by = self._actor(conn, actor, "quarantine").name
            self._move(conn, self._lock(conn, policy_hash), "quarantine", by, reason)
        return self.get(policy_hash)

    def release(self, actor: User, policy_hash: str, reason: str = "") -> PolicyRecord:
        """quarantined -> candidate: back at the start of shadow, canary and approvals."""
        with self._tx() as conn:
            by = self._actor(conn, actor, "release").name
            self._move(conn, self._lock(conn, policy_hash), "release", by, reason)
        return self.get(policy_hash)

    def system_quarantine(self, policy_hash: str, reason: str, from_state: str,
                          **detail: Any) -> bool:
        """Quarantine ``policy_hash`` as ``system``, the actor of automatic actions (the daily
        review, the canary's SLO gates): one transaction, the policy's row locked, an audit row
        with ``reason`` and ``detail``. False where it is no longer in ``from_state`` (another
        process, or a person, moved it first)."""
        with self._tx() as conn:
            row = self._lock(conn, policy_hash)
            if row["state"] != from_state:
                return False
            self._move(conn, row, "quarantine", SYSTEM, reason, **detail)
        return True

    def review(self, policy_hash: str, daily: Iterable[Mapping[str, Any] | DailyResult],
               days: int = UNDERPERFORMANCE_DAYS) -> list[DailyResult] | None:
        """The daily review of a live policy (seed 004 §6): with ``days`` consecutive days worse
        than TWAP it is quarantined by ``system`` and its flow goes to the fallback. Returns the
        streak that quarantined it, or None."""
        streak = underperformance_streak(daily, days)
        if streak is None:
            return None
        moved = self.system_quarantine(
            policy_hash, f"worse than TWAP on {days} consecutive days "
            f"({streak[0].day} .. {streak[-1].day})", "live",
            days=[{"day": d.day, "diff_bps_mean": d.diff_bps_mean, "ci95": d.ci95}
                  for d in streak])
        if not moved:
            state = self.get(policy_hash).state
            raise RegistryError(f"policy {policy_hash[:12]} is {state}: the daily "
                                "review quarantines live policies only")
        return streak

    # -- the feature flag --------------------------------------------------------------------
    def set_flag(self, actor: User, target: str, fallback: bool, reason: str = "") -> None:
        """Send ``target`` (a policy hash, or ``*`` for all) to the fallback, or back."""
        action = "flag" if fallback else "unflag"
        with self._tx() as conn:
            by = self._actor(conn, actor, action).name
            scope = ""
            if target != ALL_POLICIES:
                scope = self._lock(conn, target)["scope"]
            old = conn.execute(sa.select(flags.c.fallback).where(flags.c.target == target)
                               .with_for_update()).scalar_one_or_none()
            values = {"fallback": fallback, "updated_by": by, "updated_at": self._now(),
                      "reason": reason}
            if old is None:
                conn.execute(flags.insert().values(target=target, **values))
            else:
                conn.execute(flags.update().where(flags.c.target == target).values(**values))
            self._event(conn, by, action, policy_hash=target, scope=scope,
                        from_state="fallback" if old else "policy",
                        to_state="fallback" if fallback else "policy", reason=reason)

    def flags(self) -> dict[str, bool]:
        with self.engine.connect() as conn:
            return {r.target: bool(r.fallback) for r in conn.execute(sa.select(flags))}

    def fallback_flag(self, policy_hash: str) -> bool:
        """True when ``policy_hash``'s flow must go to the fallback: the all-policies flag or its
        own is on, or it is not registered, or it is not in shadow / canary / live (quarantined,
        retired, a mere candidate)."""
        with self.engine.connect() as conn:
            raised, state = conn.execute(_FALLBACK_QUERY, {"h": policy_hash}).one()
        return bool(raised) or state not in ACTIVE_STATES


#: fallback_flag's one round trip: (flags raised for it or for all, its state or NULL)
_FALLBACK_QUERY = sa.select(
    sa.select(sa.func.count()).select_from(flags).where(
        flags.c.target.in_([ALL_POLICIES, sa.bindparam("h")]), flags.c.fallback.is_(True))
    .scalar_subquery(),
    sa.select(policies.c.state).where(policies.c.policy_hash == sa.bindparam("h"))
    .scalar_subquery())

_OPEN: dict[str, Registry] = {}
_OPEN_LOCK = threading.Lock()


def fallback_flag(policy_hash: str, url: str | None = None) -> bool:
    """``Registry(url).fallback_flag(policy_hash)`` on a registry opened once per URL: what the
    service asks before each parent order's decisions."""
    key = url or default_url()
    with _OPEN_LOCK:
        registry = _OPEN.get(key)
        if registry is None:
            registry = _OPEN[key] = Registry(key)
    return registry.fallback_flag(policy_hash)


def _illegal(digest: str, state: str, action: str) -> str:
    legal = sorted(a for a, moves in TRANSITIONS.items() if state in moves and a != "retire")
    return (f"policy {digest[:12]} is {state}: cannot {action} it "
            f"(from {state}: {', '.join(legal) or 'nothing'})")


def _check_scope(scope: str) -> str:
    if scope != ALL_SCOPES and not (0 < len(scope) <= 64 and scope.isprintable()
                                    and " " not in scope):
        raise RegistryError(f"scope {scope!r} must be a symbol (no spaces, up to 64 "
                            f"characters) or {ALL_SCOPES!r} for the whole desk")
    return scope


def _record(row: Any) -> PolicyRecord:
    return PolicyRecord(
        policy_hash=row["policy_hash"], scope=row["scope"], state=row["state"],
        state_seq=int(row["state_seq"]), name=row["name"], algo=row["algo"], path=row["path"],
        training=json.loads(row["training"]), features=json.loads(row["features"]),
        evaluation=json.loads(row["evaluation"]), registered_by=row["registered_by"],
        registered_at=row["registered_at"])


def _evaluation_of(path: Path, digest: str) -> dict[str, Any]:
    """The part of a results.json about the policy with hash ``digest``: its label, its
    metrics, its paired comparisons, and the run that produced them."""
    from execrl.domain.files import load_json_object

    results = load_json_object(path, "results file", RegistryError)
    checkpoints = (results.get("provenance") or {}).get("checkpoints") or {}
    labels = [label for label, ck in checkpoints.items()
              if isinstance(ck, dict) and ck.get("policy_hash") == digest]
    if not labels:
        named = ", ".join(f"{k}={str((v or {}).get('policy_hash'))[:12]}"
                          for k, v in checkpoints.items()) or "none"
        raise RegistryError(f"results file {str(path)!r} does not evaluate policy {digest[:12]} "
                            f"(its checkpoints: {named})")
    label = labels[0]
    return {
        "label": label,
        "results_path": str(path.resolve()),
        "env": results.get("env"),
        "orders": results.get("orders"),
        "seed": results.get("seed"),
        "metrics": (results.get("policies") or {}).get(label),
        "comparisons": [c for c in results.get("comparisons") or []
                        if isinstance(c, dict) and c.get("policy") == label],
        "execrl_version": (results.get("provenance") or {}).get("execrl_version"),
    }


def _db_reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

