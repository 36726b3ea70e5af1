"""Access to the registry: every (role, action) the permission table forbids is refused with one
line and changes nothing; every way to approve one's own promotion is refused; tokens are stored
hashed and authenticate only their user."""

from __future__ import annotations

import itertools

import pytest
import sqlalchemy as sa

import registry_helpers
from execrl.service import access
from execrl.service.access import (
    ACTIONS,
    PERMISSIONS,
    ROLES,
    AccessDenied,
    User,
    require,
)
from execrl.service.registry import Registry, RegistryError
from pg import postgres_url  # noqa: F401  (the fixture)
from registry_helpers import cheap_tokens, staffed

checkpoints = registry_helpers.checkpoints  # the fixtures
registry = registry_helpers.registry


def test_the_permission_table_says_what_the_desk_expects():
    may = {(r, a) for r in ROLES for a in ACTIONS if a in PERMISSIONS[r]}
    assert {r for r in ROLES if (r, "approve") in may} == {"pm", "risk_officer"}
    assert {r for r in ROLES if (r, "users") in may} == {"admin"}
    assert {r for r in ROLES if (r, "flag") in may} == {"trader", "quant", "pm", "risk_officer"}
    assert {r for r in ROLES if (r, "unflag") in may} == {"pm", "risk_officer"}
    assert all((r, "view") in may for r in ROLES)
    assert set(PERMISSIONS) == set(ROLES) and all(PERMISSIONS[r] <= set(ACTIONS) for r in ROLES)
    for role, action in may:  # the allowed pairs pass the check
        require(User("someone", role), action)


def _world(reg: Registry, people, folders):
    """A policy ready for each action: a live one, a canary with an open request, a quarantined
    one, and a retired one to roll back to."""
    quinn = people["quinn"]

    def to_canary(folder):
        digest = reg.register(quinn, folder).policy_hash
        reg.promote(quinn, digest)
        reg.promote(quinn, digest)
        return digest

    old = to_canary(folders[0])
    for digest in (old, live := to_canary(folders[1])):
        reg.request(quinn, digest)
        reg.approve(people["pam"], digest)
        reg.approve(people["rita"], digest)
    canary = to_canary(folders[2])
    reg.request(quinn, canary)
    quarantined = reg.register(quinn, folders[3]).policy_hash
    reg.quarantine(people["rita"], quarantined, reason="x")
    return {"live": live, "canary": canary, "quarantined": quarantined,
            "candidate": reg.register(quinn, folders[4]).policy_hash, "folder": folders[5]}


def _attempts(reg: Registry, w):
    """One call per action, as the registry's API offers it."""
    return {
        "view": None,  # every role may read; the HTTP API checks it with authorize(token)
        "register": lambda u: reg.register(u, w["folder"]),
        "promote": lambda u: reg.promote(u, w["candidate"]),
        "request": lambda u: reg.request(u, w["canary"]),
        "approve": lambda u: reg.approve(u, w["canary"]),
        "rollback": lambda u: reg.rollback(u, "*", reason="x"),
        "quarantine": lambda u: reg.quarantine(u, w["live"], reason="x"),
        "release": lambda u: reg.release(u, w["quarantined"]),
        "flag": lambda u: reg.set_flag(u, w["live"], True),
        "unflag": lambda u: reg.set_flag(u, w["live"], False),
        "users": lambda u: reg.add_user(u, "newcomer", "trader"),
    }


def _snapshot(reg: Registry):
    return ([(p.policy_hash, p.state, p.state_seq) for p in reg.policies()], reg.events(),
            reg.requests(), reg.flags(), reg.users())


def test_every_forbidden_role_and_action_is_refused_in_one_line(registry, checkpoints):
    people = staffed(registry)
    world = _world(registry, people, checkpoints)
    attempts = _attempts(registry, world)
    by_role = {"trader": "tina", "quant": "quinn", "pm": "paul", "risk_officer": "rob",
               "admin": "ada"}
    before = _snapshot(registry)
    refused = []
    for role, action in itertools.product(ROLES, ACTIONS):
        if action in PERMISSIONS[role]:
            continue
        user = people[by_role[role]]
        with pytest.raises(AccessDenied) as exc:
            attempts[action](user)
        text = str(exc.value)
        assert "\n" not in text and f"({role}) may not {action}" in text, text
        # a User object claiming another role is re-read from the database: still refused
        forged = "admin" if action == "users" else "pm"
        with pytest.raises(AccessDenied, match=rf"\({role}\) may not {action}"):
            attempts[action](User(by_role[role], forged))
        refused.append((role, action))
    assert _snapshot(registry) == before  # nothing written, not even an audit row
    assert len(refused) == len(ROLES) * len(ACTIONS) - sum(map(len, PERMISSIONS.values()))
    assert ("trader", "approve") in refused and ("admin", "approve") in refused


def test_every_self_approval_path_is_refused(registry, checkpoints):
    people = staffed(registry)
    quinn, pam, paul, rita = people["quinn"], people["pam"], people["paul"], people["rita"]
    digest = registry.register(pam, checkpoints[0]).policy_hash
    registry.promote(pam, digest)
    registry.promote(pam, digest)
    seen = []

    def refused(call, *needles):
        with pytest.raises((AccessDenied, RegistryError)) as exc:
            call()
        text = str(exc.value)
        assert "\n" not in text and all(n in text for n in needles), text
        assert registry.get(digest).state == "canary"
        seen.append(text)

    # no promotion to live without the request and approvals, for anyone
    for user in people.values():
        with pytest.raises((AccessDenied, RegistryError)):
            registry.promote(user, digest)
    registry.request(pam, digest)
    refused(lambda: registry.approve(pam, digest), "requester cannot approve")  # own request
    registry.approve(paul, digest)
    refused(lambda: registry.approve(paul, digest), "already")  # the same approver twice
    refused(lambda: registry.approve(pam, digest), "requester cannot approve")  # own, second
    refused(lambda: registry.approve(quinn, digest), "(quant) may not approve")
    refused(lambda: registry.approve(User("quinn", "risk_officer"), digest), "(quant)")
    # an admin cannot make a second approver out of themselves either
    refused(lambda: registry.add_user(people["ada"], "ada", "pm"), "exists already")
    refused(lambda: registry.add_user(None, "ada2", "pm"), "needs an admin")
    refused(lambda: registry.add_user(people["ada"], "system", "pm"), "reserved")
    # rollback reinstates only a version that was live before: never a canary
    refused(lambda: registry.rollback(rita, "*"), "no green version")
    assert registry.approve(rita, digest).promoted
    assert len(seen) == 9


def test_tokens_are_stored_hashed_and_name_their_user(tmp_path):
    reg = Registry(f"sqlite:///{tmp_path / 'r.sqlite'}")  # the real scrypt cost here
    token = reg.add_user(None, "ada", "admin")
    pam_token = reg.add_user(reg.authenticate(token), "pam", "pm")
    assert reg.authenticate(token) == User("ada", "admin")
    assert reg.authenticate(pam_token) == User("pam", "pm")
    assert reg.authorize(pam_token, "approve") == User("pam", "pm")
    with pytest.raises(AccessDenied, match=r"\(pm\) may not users"):
        reg.authorize(pam_token, "users")
    with reg.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM registry_tokens")).mappings().all()
    secret = pam_token.split(".", 1)[1]
    assert len(rows) == 2 and not any(secret in str(v) for r in rows for v in r.values())
    n, r, p = access.SCRYPT_COST
    assert all(row["hash"].startswith(f"scrypt:{n}:{r}:{p}:") for row in rows)
    token_id = pam_token.split(".")[0]
    for bad in [f"{token_id}.{secret[:-1]}x", f"{'0' * 16}.{secret}", "no-dot", ".", "a.",
                token.replace(".", "", 1)]:
        with pytest.raises(AccessDenied) as exc:
            reg.authenticate(bad)
        assert "\n" not in str(exc.value)
    reg.deactivate(reg.authenticate(token), "pam")
    with pytest.raises(AccessDenied, match="deactivated"):
        reg.authenticate(pam_token)


def test_a_token_keeps_working_after_the_cost_is_raised(tmp_path, monkeypatch):
    cheap_tokens(monkeypatch)
    reg = Registry(f"sqlite:///{tmp_path / 'r.sqlite'}")
    token = reg.add_user(None, "ada", "admin")
    monkeypatch.setattr(access, "SCRYPT_COST", (2**12, 8, 1))
    second = reg.issue_token(reg.authenticate(token), "ada")
    assert reg.authenticate(token) == reg.authenticate(second) == User("ada", "admin")


@pytest.mark.parametrize(("name", "role", "needle"), [
    ("bob", "boss", "role 'boss' is unknown"), ("1bob", "pm", "not allowed"),
    ("bo b", "pm", "not allowed"), ("system", "pm", "reserved")])
def test_bad_users_are_refused(tmp_path, monkeypatch, name, role, needle):
    cheap_tokens(monkeypatch)
    reg = Registry(f"sqlite:///{tmp_path / 'r.sqlite'}")
    ada = reg.authenticate(reg.add_user(None, "ada", "admin"))
    with pytest.raises(AccessDenied, match=needle):
        reg.add_user(ada, name, role)
    assert [u.name for u in reg.users()] == ["ada"]
