"""``radpilot users ...`` and ``radpilot tokens ...``: local users and machine clients' API tokens.

Passwords come from a hidden prompt (asked twice) or the first line of ``--password-file``,
never from the command line, where other users and the shell history would see them. A
token's secret is printed once, to standard output, and only its digest is kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy import Engine

from radpilot.config import Settings
from radpilot.logging_setup import configure_logging

users_app = typer.Typer(help="Local users who sign in to the reading room.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens for machine clients (Authorization: Bearer TOKEN).", no_args_is_help=True)
console = Console(stderr=True)

DataDirOption = Annotated[Path | None, typer.Option("--data-dir", help="Archive folder [env RADPILOT_DATA_DIR]")]
DatabaseOption = Annotated[
    str | None, typer.Option("--database-url", help="SQLAlchemy URL, default SQLite in the data dir [env RADPILOT_DATABASE_URL]")
]
RoleOption = Annotated[str, typer.Option("--role", help="radiologist, technologist, administrator or researcher")]


@contextmanager
def database(data_dir: Path | None, database_url: str | None) -> Iterator[Engine]:
    given = {k: v for k, v in {"data_dir": data_dir, "database_url": database_url}.items() if v is not None}
    try:
        settings = Settings(**given)
    except ValueError as exc:
        console.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from exc
    configure_logging("WARNING")
    from radpilot.db import make_engine, migrate

    engine = make_engine(settings.resolved_database_url)
    migrate(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def _fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[red]{escape(message)}[/red]")
    return typer.Exit(code)


def _role(value: str):  # noqa: ANN202 - radpilot.security.principal.Role
    from radpilot.security.principal import Role

    try:
        return Role.parse(value)
    except ValueError as exc:
        raise _fail(str(exc), 2) from exc


def read_password(password_file: Path | None) -> str:
    """The password from the file's first line, or from a hidden prompt asked twice."""
    if password_file is not None:
        try:
            lines = password_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise _fail(f"cannot read the password file {password_file}: {exc.strerror}", 2) from exc
        if not lines or not lines[0]:
            raise _fail(f"the password file {password_file} is empty", 2)
        return lines[0]
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True, err=True))


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="User name")],
    role: RoleOption,
    password_file: Annotated[Path | None, typer.Option("--password-file", help="Read the password from this file's first line")] = None,
    oidc: Annotated[bool, typer.Option("--oidc", help="Signs in through OpenID Connect only (no password)")] = False,
    must_change: Annotated[bool, typer.Option("--must-change-password", help="Ask for a new password at the first sign-in")] = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Add a user with a role; the password is asked for (twice) unless --password-file is given."""
    from radpilot.security.audit import current_user
    from radpilot.security.users import AccountError, add_user

    chosen = _role(role)
    password = None if oidc else read_password(password_file)
    with database(data_dir, database_url) as engine:
        try:
            add_user(
                engine, name, chosen, password, must_change_password=must_change, source="oidc" if oidc else "local", by=current_user()
            )
        except AccountError as exc:
            raise _fail(str(exc)) from exc
    console.print(f"user {escape(name)} added with role {chosen.value}")


@users_app.command("list")
def users_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """The users, their roles and whether they are disabled or locked out."""
    from radpilot.security.users import list_users

    with database(data_dir, database_url) as engine:
        users = list_users(engine)
    if as_json:
        typer.echo(json.dumps([u.to_dict() for u in users], indent=2))
        return
    table = Table("name", "role", "state", "sign-in", "created")
    for user in users:
        state = "disabled" if user.disabled else (f"locked until {user.locked_until:%Y-%m-%d %H:%M}" if user.locked_until else "active")
        table.add_row(escape(user.name), user.role.value, state, user.source, f"{user.created_at:%Y-%m-%d %H:%M}")
    Console().print(table)


@users_app.command("disable")
def users_disable(
    name: Annotated[str, typer.Argument(help="User name")], data_dir: DataDirOption = None, database_url: DatabaseOption = None
) -> None:
    """Disable a user; their sessions end at once."""
    from radpilot.security.audit import current_user
    from radpilot.security.users import AccountError, disable_user

    with database(data_dir, database_url) as engine:
        try:
            disable_user(engine, name, by=current_user())
        except AccountError as exc:
            raise _fail(str(exc)) from exc
    console.print(f"user {escape(name)} disabled")


@users_app.command("unlock")
def users_unlock(
    name: Annotated[str, typer.Argument(help="User name")], data_dir: DataDirOption = None, database_url: DatabaseOption = None
) -> None:
    """Lift a lock-out after too many wrong passwords."""
    from radpilot.security.audit import current_user
    from radpilot.security.users import AccountError, unlock_user

    with database(data_dir, database_url) as engine:
        try:
            unlock_user(engine, name, by=current_user())
        except AccountError as exc:
            raise _fail(str(exc)) from exc
    console.print(f"user {escape(name)} unlocked")


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Argument(help="Name of the machine client")],
    role: RoleOption,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Create an API token and print it once (only a digest is kept)."""
    from radpilot.security.audit import current_user
    from radpilot.security.tokens import create_token
    from radpilot.security.users import AccountError

    chosen = _role(role)
    with database(data_dir, database_url) as engine:
        try:
            secret = create_token(engine, name, chosen, by=current_user())
        except AccountError as exc:
            raise _fail(str(exc)) from exc
    typer.echo(secret)
    console.print(f"token {escape(name)} ({chosen.value}) created; it is shown only this once: use 'Authorization: Bearer TOKEN'")


@tokens_app.command("revoke")
def tokens_revoke(
    name: Annotated[str, typer.Argument(help="Token name")], data_dir: DataDirOption = None, database_url: DatabaseOption = None
) -> None:
    """Revoke a token; requests with it are refused from now on."""
    from radpilot.security.audit import current_user
    from radpilot.security.tokens import revoke_token
    from radpilot.security.users import AccountError

    with database(data_dir, database_url) as engine:
        try:
            revoke_token(engine, name, by=current_user())
        except AccountError as exc:
            raise _fail(str(exc)) from exc
    console.print(f"token {escape(name)} revoked")


@tokens_app.command("list")
def tokens_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """The tokens (names, roles, created, revoked); never their secrets."""
    from radpilot.security.tokens import list_tokens

    with database(data_dir, database_url) as engine:
        tokens = list_tokens(engine)
    if as_json:
        typer.echo(json.dumps([t.to_dict() for t in tokens], indent=2))
        return
    table = Table("name", "role", "created", "by", "revoked")
    for token in tokens:
        revoked = f"{token.revoked_at:%Y-%m-%d %H:%M}" if token.revoked_at else ""
        table.add_row(escape(token.name), token.role.value, f"{token.created_at:%Y-%m-%d %H:%M}", escape(token.created_by), revoked)
    Console().print(table)
