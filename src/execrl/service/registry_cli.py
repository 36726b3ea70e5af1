"""``execrl registry``: the policy registry on the command line (register, list, show, request,
approve, promote, rollback, quarantine, release, review, flag, log, users).

Every command but ``list`` / ``show`` / ``log`` acts as the user whose token ``--token`` (or
``$EXECRL_TOKEN``) gives, so the audit log names who did it; the database is ``--db`` (or
``$EXECRL_REGISTRY_URL``, default ``sqlite:///execrl-registry.sqlite``). Errors are one
``error:`` line, exit 2, nothing written.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from execrl.domain.errors import ExecRLError
from execrl.service.access import ROLES, AccessDenied
from execrl.service.registry import (
    ALL_POLICIES,
    ALL_SCOPES,
    DEFAULT_URL,
    DEFAULT_URL_ENV,
    STATES,
    Registry,
    RegistryError,
)

TOKEN_ENV = "EXECRL_TOKEN"

registry_app = typer.Typer(help="The policy registry: states, 4-eyes promotion to live, "
                           "rollback, quarantine, the fallback flag, users.",
                           no_args_is_help=True, rich_markup_mode=None)
users_app = typer.Typer(help="Registry users, their roles and tokens (an admin's commands).",
                        no_args_is_help=True, rich_markup_mode=None)
registry_app.add_typer(users_app, name="users")

DbOpt = Annotated[str | None, typer.Option(
    "--db", envvar=DEFAULT_URL_ENV, show_envvar=False,
    help=f"Registry database URL (${DEFAULT_URL_ENV}; default {DEFAULT_URL}; e.g. "
    "postgresql://user@host/db).")]
TokenOpt = Annotated[str | None, typer.Option(
    "--token", envvar=TOKEN_ENV, show_envvar=False,
    help=f"Your registry token (${TOKEN_ENV}), as 'execrl registry users add' printed it.")]
PolicyArg = Annotated[str, typer.Argument(help="Policy hash (or a unique prefix of 6+ hex "
                                          "digits).")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why: kept in the audit log.")]
TargetOpt = Annotated[str, typer.Option("--to", help="Target state of the promotion.")]


def _fail(message: str) -> typer.Exit:
    from execrl.cli import _error

    _error(message)
    return typer.Exit(2)


def _one_line_errors(command: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except ExecRLError as exc:
            raise _fail(str(exc)) from None

    return run


def _open(db: str | None) -> Registry:
    return Registry(db)


def _me(registry: Registry, token: str | None) -> Any:
    if not token:
        raise AccessDenied(f"no token: give --token or set ${TOKEN_ENV} (an admin issues one "
                           "with 'execrl registry users add')")
    return registry.authenticate(token)


def _reason(reason: str, what: str) -> str:
    if not reason.strip():
        raise RegistryError(f"--reason is required to {what} (it goes into the audit log)")
    return reason.strip()


def _console() -> Any:
    from execrl.cli import console

    return console


@registry_app.command("register")
@_one_line_errors
def register(
    checkpoint: Annotated[Path, typer.Argument(help="An execrl train checkpoint folder.")],
    results: Annotated[Path | None, typer.Option(
        "--results", help="results.json of an execrl evaluate run of this checkpoint.")] = None,
    scope: Annotated[str, typer.Option(
        help=f"The symbol the policy is for, or '{ALL_SCOPES}' for the whole desk.")
    ] = ALL_SCOPES,
    reason: ReasonOpt = "",
    db: DbOpt = None,
    token: TokenOpt = None,
) -> None:
    """Register a checkpoint (by its policy hash) as a candidate."""
    reg = _open(db)
    rec = reg.register(_me(reg, token), checkpoint, results, scope=scope, reason=reason)
    _console().print(f"registered {rec.policy_hash} ({rec.algo or rec.name}, scope "
                     f"{rec.scope!r}) as {rec.state}")


@registry_app.command("list")
@_one_line_errors
def list_policies(
    state: Annotated[str | None, typer.Option(help=f"Only this state: {', '.join(STATES)}.")
                     ] = None,
    scope: Annotated[str | None, typer.Option(help="Only this scope.")] = None,
    db: DbOpt = None,
) -> None:
    """The registered policies and their states."""
    from execrl.cli import _print_whole

    reg = _open(db)
    flags = reg.flags()
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("policy", "scope", "state", "algo", "fallback", "registered", "by",
                   "IS - TWAP (bps)"):
        table.add_column(column)
    for rec in reg.policies(state=state, scope=scope):
        comparisons = (rec.evaluation or {}).get("comparisons") or []
        twap = [c for c in comparisons if c.get("baseline") == "twap"]
        diff = f"{twap[0]['diff_bps_mean']:+.2f}" if twap else ""
        flagged = flags.get(ALL_POLICIES) or flags.get(rec.policy_hash)
        table.add_row(rec.policy_hash[:16], rec.scope, rec.state, rec.algo,
                      "FLAG" if flagged else "", rec.registered_at[:19], rec.registered_by, diff)
    _print_whole(table)
    if flags.get(ALL_POLICIES):
        _console().print("every policy is flagged to the fallback")


@registry_app.command("show")
@_one_line_errors
def show(policy: PolicyArg, db: DbOpt = None) -> None:
    """One policy: its record, requests, flag and audit log, as JSON."""
    reg = _open(db)
    digest = reg.resolve(policy)
    rec = reg.get(digest)
    shown = {
        "policy_hash": rec.policy_hash, "scope": rec.scope, "state": rec.state,
        "name": rec.name, "algo": rec.algo, "path": rec.path,
        "registered_by": rec.registered_by, "registered_at": rec.registered_at,
        "fallback": reg.fallback_flag(digest), "evaluation": rec.evaluation,
        "training": rec.training,
        "requests": [vars(r) for r in reg.requests(digest)],
        "events": reg.events(digest),
    }
    typer.echo(json.dumps(shown, indent=2, default=list))


@registry_app.command("promote")
@_one_line_errors
def promote(policy: PolicyArg, reason: ReasonOpt = "", db: DbOpt = None,
            token: TokenOpt = None) -> None:
    """candidate -> shadow, shadow -> canary (live: request, then two approvals)."""
    reg = _open(db)
    me = _me(reg, token)
    rec = reg.promote(me, reg.resolve(policy), reason=reason)
    _console().print(f"{rec.short} is {rec.state}")


@registry_app.command("request")
@_one_line_errors
def request(policy: PolicyArg, to: TargetOpt = "live", reason: ReasonOpt = "",
            db: DbOpt = None, token: TokenOpt = None) -> None:
    """Ask for a canary's promotion to live: two PM / risk officers (not you) must approve."""
    reg = _open(db)
    me = _me(reg, token)
    req = reg.request(me, reg.resolve(policy), target=to, reason=reason)
    _console().print(f"request {req.request_id}: {req.policy_hash[:12]} to {req.target}, by "
                     f"{req.requested_by}; needs two approvals by PM / risk officers")


@registry_app.command("approve")
@_one_line_errors
def approve(policy: PolicyArg, to: TargetOpt = "live", reason: ReasonOpt = "",
            db: DbOpt = None, token: TokenOpt = None) -> None:
    """Approve the open request for POLICY; the second approval promotes it."""
    reg = _open(db)
    me = _me(reg, token)
    done = reg.approve(me, reg.resolve(policy), target=to, reason=reason)
    req = done.request
    if done.promoted:
        retired = f"; {done.retired[:12]} retired" if done.retired else ""
        _console().print(f"approved by {', '.join(req.approvers)}: {req.policy_hash[:12]} is "
                         f"{req.target}{retired}")
    else:
        _console().print(f"approval {len(req.approvers)} of request {req.request_id} by "
                         f"{me.name}; one more approver needed")


@registry_app.command("rollback")
@_one_line_errors
def rollback(
    scope: Annotated[str, typer.Option(help="The scope to roll back.")] = ALL_SCOPES,
    reason: ReasonOpt = "", db: DbOpt = None, token: TokenOpt = None,
) -> None:
    """Quarantine the scope's live policy and bring back its last green version."""
    reg = _open(db)
    me = _me(reg, token)
    out, back = reg.rollback(me, scope, reason=_reason(reason, "roll back"))
    gone = f"{out[:12]} quarantined, " if out else ""
    _console().print(f"scope {scope!r}: {gone}{back[:12]} live again")


@registry_app.command("quarantine")
@_one_line_errors
def quarantine(policy: PolicyArg, reason: ReasonOpt = "", db: DbOpt = None,
               token: TokenOpt = None) -> None:
    """Take POLICY out of shadow / canary / live; its flow goes to the fallback."""
    reg = _open(db)
    me = _me(reg, token)
    rec = reg.quarantine(me, reg.resolve(policy), reason=_reason(reason, "quarantine"))
    _console().print(f"{rec.short} is quarantined; its flow goes to the fallback")


@registry_app.command("release")
@_one_line_errors
def release(policy: PolicyArg, reason: ReasonOpt = "", db: DbOpt = None,
            token: TokenOpt = None) -> None:
    """quarantined -> candidate: it has to earn shadow, canary and live again."""
    reg = _open(db)
    me = _me(reg, token)
    rec = reg.release(me, reg.resolve(policy), reason=_reason(reason, "release"))
    _console().print(f"{rec.short} is {rec.state}")


@registry_app.command("review")
@_one_line_errors
def review(
    policy: PolicyArg,
    daily: Annotated[Path, typer.Argument(help="JSON list of daily paired results against "
                                          "TWAP: {day, diff_bps_mean, ci95}.")],
    db: DbOpt = None, token: TokenOpt = None,
) -> None:
    """The daily review: five consecutive days worse than TWAP quarantine a live policy."""
    from execrl.domain.files import parse_json_object, read_text_file

    reg = _open(db)
    me = _me(reg, token)
    if not me.may("quarantine"):
        raise AccessDenied(f"user {me.name!r} ({me.role}) may not quarantine: the daily review "
                           "needs the role pm or risk_officer")
    text = read_text_file(daily, "daily results file", RegistryError)
    rows = parse_json_object('{"days": ' + text + "}", f"daily results file {str(daily)!r}",
                             RegistryError)["days"]
    if not isinstance(rows, list):
        raise RegistryError(f"daily results file {str(daily)!r} must hold a JSON list")
    streak = reg.review(reg.resolve(policy), rows)
    if streak is None:
        _console().print(f"{policy[:12]}: no five consecutive days worse than TWAP; stays live")
    else:
        _console().print(f"{policy[:12]}: worse than TWAP {streak[0].day} .. {streak[-1].day}: "
                         "quarantined, its flow goes to the fallback")


@registry_app.command("flag")
@_one_line_errors
def flag(
    policy: Annotated[str | None, typer.Argument(help="Policy hash (prefix); or --all.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every policy at once.")] = False,
    off: Annotated[bool, typer.Option("--off", help="Hand the flow back to the policy.")
                   ] = False,
    reason: ReasonOpt = "", db: DbOpt = None, token: TokenOpt = None,
) -> None:
    """Runbook step 1: send one policy's flow, or all flow, to the fallback (--off: back)."""
    if all_ == (policy is not None):
        raise RegistryError("give a policy hash or --all (not both)")
    reg = _open(db)
    me = _me(reg, token)
    target = ALL_POLICIES if all_ else reg.resolve(policy or "")
    reg.set_flag(me, target, not off, reason=_reason(reason, "flip the flag"))
    who = "every policy" if all_ else target[:12]
    _console().print(f"{who}: flow goes to the {'policy' if off else 'fallback'}")


@registry_app.command("log")
@_one_line_errors
def log(policy: Annotated[str | None, typer.Argument(help="Only this policy.")] = None,
        db: DbOpt = None) -> None:
    """The audit log: who did what, when, from -> to, and why (JSON lines)."""
    reg = _open(db)
    digest = None if policy is None else reg.resolve(policy)
    for event in reg.events(digest):
        typer.echo(json.dumps(event, sort_keys=True))


@users_app.command("add")
@_one_line_errors
def users_add(
    name: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[str, typer.Option(help=f"One of {', '.join(ROLES)}.")],
    db: DbOpt = None, token: TokenOpt = None,
) -> None:
    """Add a user and print their token (once: only its hash is kept). The first user of an
    empty registry is an admin added without a token."""
    reg = _open(db)
    me = None if not token and not reg.users() else _me(reg, token)
    new = reg.add_user(me, name, role)
    _console().print(f"added {name} ({role}); token (shown once):")
    typer.echo(new)


@users_app.command("token")
@_one_line_errors
def users_token(name: Annotated[str, typer.Argument(help="User name.")], db: DbOpt = None,
                token: TokenOpt = None) -> None:
    """Issue another token for NAME."""
    reg = _open(db)
    typer.echo(reg.issue_token(_me(reg, token), name))


@users_app.command("deactivate")
@_one_line_errors
def users_deactivate(name: Annotated[str, typer.Argument(help="User name.")],
                     reason: ReasonOpt = "", db: DbOpt = None, token: TokenOpt = None) -> None:
    """Deactivate NAME: their tokens stop working and their approvals stop counting."""
    reg = _open(db)
    reg.deactivate(_me(reg, token), name, reason=reason)
    _console().print(f"{name} is deactivated")


@users_app.command("list")
@_one_line_errors
def users_list(db: DbOpt = None) -> None:
    """The users and their roles."""
    for user in _open(db).users():
        typer.echo(f"{user.name}\t{user.role}\t{'active' if user.active else 'inactive'}")
