"""Local users: argon2id password hashes, sign-in with rate limiting and lock-out.

A wrong password is counted per user name and per client address; after
``login_max_failures`` wrong passwords within ``login_window_s`` the user is locked for
``login_lockout_s``, and even the right password is refused until then (the refusal
says so, without saying whether the password was right). An address that fails
``login_max_failures_per_client`` times in the window is refused for any user name,
which slows guessing across many names.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from radpilot.config import Settings
from radpilot.db import utcnow
from radpilot.security.audit import record
from radpilot.security.models import AuthSession, LoginAttempt, User
from radpilot.security.principal import Principal, Role

logger = logging.getLogger(__name__)

# argon2-cffi's defaults are argon2id with RFC 9106's low-memory profile (t=3, m=64 MiB, p=4).
_HASHER = PasswordHasher()
# Verified when the user name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024


class AccountError(ValueError):
    """A user-management request that cannot be done; the message says why."""


class SignInRefused(PermissionError):
    """A sign-in was refused; ``locked`` says whether a lock-out (not a wrong password) refused it."""

    def __init__(self, message: str, *, locked: bool = False) -> None:
        super().__init__(message)
        self.locked = locked


@dataclass(frozen=True)
class UserInfo:
    name: str
    role: Role
    disabled: bool
    must_change_password: bool
    source: str
    created_at: datetime
    locked_until: datetime | None

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "role": self.role.value,
            "disabled": self.disabled,
            "must_change_password": self.must_change_password,
            "source": self.source,
            "created_at": self.created_at.isoformat(),
            "locked_until": self.locked_until.isoformat() if self.locked_until else None,
        }


def aware(value: datetime | None) -> datetime | None:
    """A stored timestamp as an aware UTC datetime (SQLite gives them back naive)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def check_name(name: str) -> str:
    name = (name or "").strip()
    if not NAME_PATTERN.match(name):
        raise AccountError(f"user name {name!r} is not valid: 1-128 letters, digits, '.', '_', '@' or '-', starting with a letter or digit")
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"the password is too short: at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError(f"the password is too long: at most {MAX_PASSWORD_LENGTH} characters")
    return password


def hash_password(password: str) -> str:
    return _HASHER.hash(check_password(password))


def generate_password() -> str:
    """A one-time password people can type: 20 characters of URL-safe base64 (120 bits)."""
    return secrets.token_urlsafe(15)


def _info(user: User) -> UserInfo:
    return UserInfo(
        name=user.name,
        role=Role.parse(user.role),
        disabled=user.disabled,
        must_change_password=user.must_change_password,
        source=user.source,
        created_at=aware(user.created_at) or utcnow(),
        locked_until=aware(user.locked_until),
    )


def add_user(
    engine: Engine, name: str, role: Role | str, password: str | None, *, must_change_password: bool = False, source: str = "local", by: str
) -> UserInfo:
    """Create a user. ``password`` may be None only for users who sign in through OpenID Connect."""
    name = check_name(name)
    role = Role.parse(role) if isinstance(role, str) else role
    if password is None and source == "local":
        raise AccountError("a local user needs a password")
    password_hash = hash_password(password) if password is not None else ""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        if session.scalar(select(User).where(User.name == name)) is not None:
            raise AccountError(f"user {name!r} already exists")
        user = User(name=name, role=role.value, password_hash=password_hash, must_change_password=must_change_password, source=source)
        session.add(user)
        record(session, who=by, action="user.add", target=f"user:{name}", details={"role": role.value, "source": source})
    logger.info("user added", extra={"user": name, "role": role.value, "by": by})
    return _info(user)


def list_users(engine: Engine) -> list[UserInfo]:
    with Session(engine) as session:
        return [_info(u) for u in session.scalars(select(User).order_by(User.name))]


def get_user(engine: Engine, name: str) -> UserInfo | None:
    with Session(engine) as session:
        user = session.scalar(select(User).where(User.name == name))
        return _info(user) if user else None


def count_users(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(User)) or 0)


def disable_user(engine: Engine, name: str, *, by: str) -> None:
    """Disable a user and end their sessions at once."""
    with Session(engine) as session, session.begin():
        user = session.scalar(select(User).where(User.name == name))
        if user is None:
            raise AccountError(f"no user {name!r}")
        user.disabled = True
        session.query(AuthSession).filter(AuthSession.user_id == user.id).delete()
        record(session, who=by, action="user.disable", target=f"user:{name}")
    logger.info("user disabled", extra={"user": name, "by": by})


def set_password(engine: Engine, name: str, new_password: str, *, by: str, must_change: bool = False) -> None:
    new_hash = hash_password(new_password)
    with Session(engine) as session, session.begin():
        user = session.scalar(select(User).where(User.name == name))
        if user is None:
            raise AccountError(f"no user {name!r}")
        user.password_hash = new_hash
        user.must_change_password = must_change
        record(session, who=by, action="user.password", target=f"user:{name}")


def _failures_since(session: Session, since: datetime, *, name: str | None = None, client: str | None = None) -> int:
    query = select(func.count()).select_from(LoginAttempt).where(LoginAttempt.at >= since, LoginAttempt.success.is_(False))
    if name is not None:
        query = query.where(LoginAttempt.name == name)
    if client is not None:
        query = query.where(LoginAttempt.client == client)
    return int(session.scalar(query) or 0)


def _last_success(session: Session, name: str) -> datetime | None:
    return aware(session.scalar(select(func.max(LoginAttempt.at)).where(LoginAttempt.name == name, LoginAttempt.success.is_(True))))


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash or _DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def sign_in(engine: Engine, settings: Settings, name: str, password: str, *, client: str = "") -> Principal:
    """Check a name and password; the Principal when they are right and the user may sign in.

    Every attempt is recorded; failures and lock-outs are audited. Raises :class:`SignInRefused`.
    """
    name = (name or "").strip()[:128]
    client = (client or "")[:64]
    now = utcnow()
    # Refusals are raised after the transaction commits: the attempt and its audit row must stay.
    with Session(engine) as session, session.begin():
        outcome = _attempt(session, settings, name, password, client, now)
    if isinstance(outcome, SignInRefused):
        raise outcome
    return outcome


def _attempt(session: Session, settings: Settings, name: str, password: str, client: str, now: datetime) -> Principal | SignInRefused:
    window_start = now - timedelta(seconds=settings.login_window_s)
    if _failures_since(session, window_start, client=client) >= settings.login_max_failures_per_client:
        session.add(LoginAttempt(name=name, client=client, at=now, success=False))
        record(
            session,
            who=name or "unknown",
            action="auth.signin.refused",
            target=f"client:{client}",
            reason="too many failures from this address",
        )
        return SignInRefused("too many failed sign-ins from this address; try again later", locked=True)
    user = session.scalar(select(User).where(User.name == name)) if name else None
    locked_until = aware(user.locked_until) if user is not None else None
    if user is not None and locked_until is not None and locked_until > now:
        # Not even a right password gets in while the lock holds, and the hash is not checked.
        session.add(LoginAttempt(name=name, client=client, at=now, success=False))
        record(session, who=name, action="auth.signin.locked", target=f"user:{name}", details={"client": client})
        return SignInRefused(f"this account is locked after too many wrong passwords until {locked_until:%H:%M:%S} UTC", locked=True)
    password_ok = _verify(user.password_hash if user is not None else "", password or "")
    if user is not None and password_ok and not user.disabled and user.source == "local":
        session.add(LoginAttempt(name=name, client=client, at=now, success=True))
        user.locked_until = None
        record(session, who=name, action="auth.signin", target=f"user:{name}", details={"client": client, "method": "password"})
        return Principal(name=user.name, role=Role.parse(user.role), kind="user")
    session.add(LoginAttempt(name=name, client=client, at=now, success=False))
    session.flush()
    record(session, who=name or "unknown", action="auth.signin.failed", target=f"user:{name}", details={"client": client})
    if user is not None:
        since = max(window_start, _last_success(session, name) or window_start)
        if _failures_since(session, since, name=name) >= settings.login_max_failures:
            user.locked_until = now + timedelta(seconds=settings.login_lockout_s)
            record(
                session,
                who=name,
                action="auth.lockout",
                target=f"user:{name}",
                reason=f"{settings.login_max_failures} wrong passwords within {settings.login_window_s} s",
                details={"client": client, "locked_until": user.locked_until.isoformat()},
            )
            logger.warning("user locked out", extra={"user": name, "client": client})
    return SignInRefused("wrong user name or password")


def unlock_user(engine: Engine, name: str, *, by: str) -> None:
    with Session(engine) as session, session.begin():
        user = session.scalar(select(User).where(User.name == name))
        if user is None:
            raise AccountError(f"no user {name!r}")
        user.locked_until = None
        session.add(LoginAttempt(name=name, client="unlock", at=utcnow(), success=True))
        record(session, who=by, action="user.unlock", target=f"user:{name}")


FIRST_USERS = (("admin", Role.ADMINISTRATOR), ("radiologist", Role.RADIOLOGIST))


def create_first_users(engine: Engine) -> list[tuple[str, Role, str]]:
    """On a node without users: an administrator and a radiologist with one-time passwords.

    Returns (name, role, password) for each user created, so the caller can show the passwords
    once, on the terminal (never in the log); both must choose their own at first sign-in.
    Nothing is created when any user exists, or when another process created them first.
    """
    if count_users(engine):
        return []
    created = [(name, role, generate_password()) for name, role in FIRST_USERS]
    try:
        with Session(engine) as session, session.begin():
            for name, role, password in created:
                session.add(User(name=name, role=role.value, password_hash=hash_password(password), must_change_password=True))
                record(session, who="radpilot", action="user.add", target=f"user:{name}", details={"role": role.value, "first_start": True})
    except IntegrityError:
        return []
    logger.info("first users created with one-time passwords", extra={"users": [name for name, _, _ in created]})
    return created
