"""API tokens for machine clients: ``Authorization: Bearer TOKEN`` on /dicomweb and /api.

A token is ``rpt_`` and 43 characters of URL-safe base64 (256 random bits). It is shown
once, when created; only its SHA-256 digest is stored. Every request looks the digest up,
so a revoked token is refused from the next request on.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from radpilot.db import utcnow
from radpilot.security.audit import record
from radpilot.security.models import ApiToken
from radpilot.security.principal import Principal, Role
from radpilot.security.users import AccountError, aware, check_name

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "rpt_"
MAX_TOKEN_LENGTH = 256


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenInfo:
    name: str
    role: Role
    created_at: datetime
    created_by: str
    revoked_at: datetime | None

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "role": self.role.value,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def _info(token: ApiToken) -> TokenInfo:
    return TokenInfo(token.name, Role.parse(token.role), aware(token.created_at) or utcnow(), token.created_by, aware(token.revoked_at))


def create_token(engine: Engine, name: str, role: Role | str, *, by: str) -> str:
    """Create a token and return its secret (the only time it is available)."""
    name = check_name(name)
    role = Role.parse(role) if isinstance(role, str) else role
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with Session(engine) as session, session.begin():
        active = session.scalar(select(ApiToken).where(ApiToken.name == name, ApiToken.revoked_at.is_(None)))
        if active is not None:
            raise AccountError(f"a token named {name!r} exists; revoke it first")
        session.add(ApiToken(name=name, role=role.value, secret_sha256=digest(secret), created_by=by))
        record(session, who=by, action="token.create", target=f"token:{name}", details={"role": role.value})
    logger.info("API token created", extra={"token_name": name, "role": role.value, "by": by})
    return secret


def revoke_token(engine: Engine, name: str, *, by: str) -> None:
    with Session(engine) as session, session.begin():
        tokens = list(session.scalars(select(ApiToken).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))))
        if not tokens:
            raise AccountError(f"no active token named {name!r}")
        for token in tokens:
            token.revoked_at = utcnow()
        record(session, who=by, action="token.revoke", target=f"token:{name}")
    logger.info("API token revoked", extra={"token_name": name, "by": by})


def list_tokens(engine: Engine) -> list[TokenInfo]:
    with Session(engine) as session:
        return [_info(t) for t in session.scalars(select(ApiToken).order_by(ApiToken.name, ApiToken.id))]


def principal_for_token(engine: Engine, secret: str) -> Principal | None:
    """The principal of an active token, or None (unknown, malformed or revoked)."""
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > MAX_TOKEN_LENGTH:
        return None
    with Session(engine) as session:
        token = session.scalar(select(ApiToken).where(ApiToken.secret_sha256 == digest(secret)))
        if token is None or token.revoked_at is not None:
            return None
        return Principal(name=token.name, role=Role.parse(token.role), kind="token")
