"""Who is making a request: the signed-in person or the machine client behind a token.

The web layer's authentication sets one :class:`Principal` on every request it lets
through (``request.state.principal``); every route that acts on patient data, and every
audit row it writes, takes the name and role from there. Role checks go through
:meth:`Principal.require` so a refusal always names the roles that would have been allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """The roles of the reading room (issue 16)."""

    RADIOLOGIST = "radiologist"
    TECHNOLOGIST = "technologist"
    ADMINISTRATOR = "administrator"
    RESEARCHER = "researcher"  # sees de-identified data only

    @classmethod
    def parse(cls, value: str) -> Role:
        """The role named ``value``; ValueError naming the known roles otherwise."""
        try:
            return cls(value.strip().lower())
        except ValueError:
            known = ", ".join(role.value for role in cls)
            raise ValueError(f"unknown role {value!r}: expected one of {known}") from None


class RoleRefused(PermissionError):
    """The principal's role may not do this; the message names the roles that may."""


@dataclass(frozen=True)
class Principal:
    """A person (``kind='user'``) or a machine client (``kind='token'``) with one role."""

    name: str
    role: Role
    kind: str = "user"

    @property
    def sees_identities(self) -> bool:
        """Whether patient name, ID and birth date may be shown to this principal."""
        return self.role is not Role.RESEARCHER

    def require(self, *roles: Role) -> None:
        """Raise :class:`RoleRefused` unless this principal has one of ``roles``."""
        if self.role not in roles:
            allowed = ", ".join(role.value for role in roles)
            raise RoleRefused(f"{self.kind} {self.name!r} has role {self.role.value!r}; this needs one of: {allowed}")
