"""Who may do what in the policy registry: users, roles, permissions and API tokens.

Roles follow the desk (seed 001 §14): a trader watches and may flip flow to the fallback; a
quant registers policies and moves them through shadow and canary; a PM or a risk officer
approves promotions to live (4-eyes), rolls back and quarantines; an admin manages users and
nothing else (separation of duties). Each action the registry offers is checked against
``PERMISSIONS`` before anything is read or written; a refusal is one ``AccessDenied`` line
naming the user, the role and the action.

Tokens (for the HTTP API and the console): ``issue_token`` returns ``ID.SECRET`` once; only the
scrypt hash of the secret (with its own salt) is stored, so a stolen database holds no usable
token. ``authenticate`` finds the row by ID and compares hashes in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from execrl.domain.errors import ExecRLError

ROLES = ("trader", "quant", "pm", "risk_officer", "admin")

#: every action the registry checks, in the order the CLI lists them
ACTIONS = (
    "view",        # list / show policies, the audit log, the flags
    "register",    # add a checkpoint as a candidate
    "promote",     # candidate -> shadow -> canary (live goes through request + approvals)
    "request",     # ask for a promotion to live
    "approve",     # approve someone else's request (4-eyes: two approvers)
    "rollback",    # the scope's live policy out, its last green version back in
    "quarantine",  # take a policy out of every state that trades; also the daily review
    "release",     # quarantined -> candidate (it must earn shadow / canary / live again)
    "flag",        # flip one policy or all of them to the fallback (runbook step 1)
    "unflag",      # hand the flow back to the policies
    "users",       # add users, issue tokens, change roles
)

PERMISSIONS: dict[str, frozenset[str]] = {
    "trader": frozenset({"view", "flag"}),
    "quant": frozenset({"view", "register", "promote", "request", "flag"}),
    "pm": frozenset({"view", "register", "promote", "request", "approve", "rollback",
                     "quarantine", "release", "flag", "unflag"}),
    "risk_officer": frozenset({"view", "approve", "rollback", "quarantine", "release", "flag",
                               "unflag"}),
    "admin": frozenset({"view", "users"}),
}

#: roles whose approval counts towards a promotion to live
APPROVER_ROLES = frozenset({"pm", "risk_officer"})

#: the actor of automatic actions (the daily review's quarantine); no token can name it
SYSTEM = "system"

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")

#: scrypt's (N, r, p) for new tokens: 2^14 x 8 (16 MiB, ~0.1 s a check), the interactive-login
#: figure of the scrypt paper; tests lower it
SCRYPT_COST = (2**14, 8, 1)


class AccessDenied(ExecRLError, PermissionError):
    """An action the user's role does not allow, a bad token, or a 4-eyes violation."""


@dataclass(frozen=True)
class User:
    name: str
    role: str
    active: bool = True

    def may(self, action: str) -> bool:
        return self.active and action in PERMISSIONS.get(self.role, frozenset())


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AccessDenied(f"role {role!r} is unknown; roles: {', '.join(ROLES)}")
    return role


def check_user_name(name: str) -> str:
    if name == SYSTEM or not _NAME.match(name):
        raise AccessDenied(f"user name {name!r} is not allowed: a letter, then up to 63 "
                           f"letters, digits, '_', '.' or '-' ({SYSTEM!r} is reserved)")
    return name


def require(user: User, action: str) -> None:
    """Refuse ``action`` unless ``user``'s role allows it: one line naming all three."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    if not user.active:
        raise AccessDenied(f"user {user.name!r} is deactivated: cannot {action}")
    if not user.may(action):
        allowed = sorted(r for r in ROLES if action in PERMISSIONS[r])
        raise AccessDenied(f"user {user.name!r} ({user.role}) may not {action}; "
                           f"it needs the role {' or '.join(allowed)}")


def new_token() -> tuple[str, str, str, str]:
    """(token shown to the user once, token id, salt hex, ``scrypt:N:R:P:HASH``). The cost
    travels with the hash, so raising ``SCRYPT_COST`` later leaves old tokens valid."""
    token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    n, r, p = SCRYPT_COST
    digest = _hash(secret, salt, n, r, p).hex()
    return f"{token_id}.{secret}", token_id, salt.hex(), f"scrypt:{n}:{r}:{p}:{digest}"


def split_token(token: str) -> tuple[str, str]:
    token_id, sep, secret = token.strip().partition(".")
    if not sep or not token_id or not secret:
        raise AccessDenied("token is malformed: expected ID.SECRET as issued by "
                           "execrl registry users add")
    return token_id, secret


def token_matches(secret: str, salt_hex: str, stored: str) -> bool:
    """Whether ``secret`` hashes to ``stored`` (constant-time comparison)."""
    kind, n, r, p, digest = stored.split(":")
    if kind != "scrypt":
        return False
    mine = _hash(secret, bytes.fromhex(salt_hex), int(n), int(r), int(p)).hex()
    return hmac.compare_digest(mine, digest)


def _hash(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, dklen=32,
                          maxmem=4 * 128 * r * n)
