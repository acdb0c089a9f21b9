"""Server-side sessions for people signed in with a browser.

The cookie carries a random 256-bit secret; the row keeps its SHA-256 digest, the user,
a CSRF token, and two limits: an absolute expiry (``session_max_age_s`` after sign-in)
and an idle timeout (``session_idle_timeout_s`` without a request). A disabled user's
sessions stop working at once because every lookup joins the user row.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from radpilot.config import Settings
from radpilot.db import utcnow
from radpilot.security.models import AuthSession, User
from radpilot.security.principal import Principal, Role
from radpilot.security.tokens import digest
from radpilot.security.users import aware

MAX_SESSION_ID_LENGTH = 128
# last_seen_at is written at most this often, so a viewer's hundreds of frame requests do not each write a row.
TOUCH_INTERVAL = timedelta(seconds=30)


@dataclass(frozen=True)
class SessionInfo:
    principal: Principal
    csrf_token: str
    must_change_password: bool


def open_session(engine: Engine, settings: Settings, user_name: str) -> str:
    """Start a session for a user and return the cookie value."""
    secret = secrets.token_urlsafe(32)
    now = utcnow()
    with Session(engine) as session, session.begin():
        user = session.scalar(select(User).where(User.name == user_name))
        if user is None or user.disabled:
            raise PermissionError(f"user {user_name!r} may not sign in")
        # Expired sessions of anyone are swept here, at sign-in, so the table stays small.
        session.execute(delete(AuthSession).where(AuthSession.expires_at < now))
        session.add(
            AuthSession(
                id_sha256=digest(secret),
                user_id=user.id,
                csrf_token=secrets.token_urlsafe(32),
                created_at=now,
                last_seen_at=now,
                expires_at=now + timedelta(seconds=settings.session_max_age_s),
            )
        )
    return secret


def lookup_session(engine: Engine, settings: Settings, secret: str) -> SessionInfo | None:
    """The session for a cookie value, or None when unknown, expired, idle too long, or its user is disabled."""
    if not secret or len(secret) > MAX_SESSION_ID_LENGTH:
        return None
    now = utcnow()
    with Session(engine) as session:
        row = session.execute(
            select(AuthSession, User).join(User, User.id == AuthSession.user_id).where(AuthSession.id_sha256 == digest(secret))
        ).first()
        if row is None:
            return None
        auth_session, user = row
        expires_at, last_seen = aware(auth_session.expires_at), aware(auth_session.last_seen_at)
        assert expires_at is not None and last_seen is not None
        if user.disabled or expires_at <= now or now - last_seen > timedelta(seconds=settings.session_idle_timeout_s):
            return None
        if now - last_seen > TOUCH_INTERVAL:
            auth_session.last_seen_at = now
            session.commit()
        return SessionInfo(Principal(user.name, Role.parse(user.role), "user"), auth_session.csrf_token, user.must_change_password)


def close_session(engine: Engine, secret: str) -> None:
    with Session(engine) as session, session.begin():
        session.execute(delete(AuthSession).where(AuthSession.id_sha256 == digest(secret)))
