"""Who is acting, and what each role may do. Checked in the core services, not only in the GUI."""
from __future__ import annotations

from dataclasses import dataclass

RADIOLOGIST = "radiologist"
ADMIN = "admin"
AUDITOR = "auditor"
ROLES = (RADIOLOGIST, ADMIN, AUDITOR)       # people (radassist users add --role)
# A non-person account (the interface feed, a scheduled import) signing in with a key file
# (users.create_service_account): it may bring orders in, nothing else.
SERVICE = "service"

# Permission -> roles allowed. One table, so a reviewer sees the whole policy at once.
PERMISSIONS: dict[str, frozenset[str]] = {
    "order.view": frozenset({RADIOLOGIST, ADMIN}),
    "order.decide": frozenset({RADIOLOGIST, ADMIN}),
    "order.import": frozenset({RADIOLOGIST, ADMIN, SERVICE}),
    "catalog.edit": frozenset({ADMIN}),
    "settings.change": frozenset({ADMIN}),
    "training.start": frozenset({ADMIN}),
    "model.promote": frozenset({ADMIN}),
    "users.manage": frozenset({ADMIN}),
    "audit.view": frozenset({ADMIN, AUDITOR}),
    "audit.export": frozenset({ADMIN, AUDITOR}),
}


class PermissionDenied(PermissionError):
    def __init__(self, actor: "Actor", permission: str):
        self.actor = actor
        self.permission = permission
        self.audited = False  # set once the refusal is in the audit log
        super().__init__(f"user {actor.username!r} ({actor.role}) may not {permission}")


@dataclass(frozen=True)
class Actor:
    """The signed-in user (or a system account for command-line batch jobs)."""

    username: str
    role: str

    def can(self, permission: str) -> bool:
        return self.role in PERMISSIONS[permission]


SYSTEM = Actor("system", ADMIN)


def require(actor: Actor, permission: str) -> None:
    """Raise PermissionDenied unless ``actor`` holds ``permission``."""
    if permission not in PERMISSIONS:
        raise KeyError(f"unknown permission {permission!r}")
    if not actor.can(permission):
        raise PermissionDenied(actor, permission)
