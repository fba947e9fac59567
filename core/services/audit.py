"""The audit trail: one core.AuditLog row per operator action, written where the action is taken.

Entry points say who acted and from where (`source`: admin, api, cli, shell, setup);
changes carry `before` and `after` (the changed fields only). Beat's own runs are not
operator actions and write nothing. Rows are never edited; the audit_logs_cleanup job
deletes them after AUDIT_LOG_RETENTION_DAYS.
"""

from __future__ import annotations

import datetime
import decimal
import getpass
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.db import models

from core.models import AuditLog, User

_SOURCES = set(AuditLog.Source.values)


def jsonable(value: Any) -> Any:
    """A value as the audit row keeps it: JSON types, model rows as their primary key and text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, models.Model):
        return {"id": jsonable(value.pk), "str": str(value)[:200]}
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, models.QuerySet):
        return [jsonable(v) for v in value[:100]]
    if isinstance(value, Iterable) and not isinstance(value, bytes):
        return [jsonable(v) for v in list(value)[:100]]
    return str(value)[:500]


def _os_user(source: str) -> str:
    """Who ran manage.py or the shell, as the operating system knows them (no user logs in there)."""
    if source not in (AuditLog.Source.CLI, AuditLog.Source.SHELL, AuditLog.Source.SETUP):
        return ""
    try:
        return f"{getpass.getuser()} (OS user)"
    except (KeyError, OSError):  # no passwd entry for the uid (some containers)
        return ""


def audit_record(
    *,
    action: str,
    source: str,
    actor: User | AnonymousUser | int | None = None,
    target: str = "",
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    **data: Any,
) -> AuditLog:
    """Write one audit entry. `actor` is the user (request.user, or their id); `data` any further detail."""
    if source not in _SOURCES:
        source = AuditLog.Source.SHELL
    user: User | None
    if isinstance(actor, AnonymousUser):
        user = None
    elif isinstance(actor, User):
        user = actor
    elif actor is not None:
        user = User.objects.filter(pk=actor).only("pk", "username").first()
    else:
        user = None
    payload: dict[str, Any] = {k: jsonable(v) for k, v in data.items() if v is not None}
    if before is not None:
        payload["before"] = jsonable(before)
    if after is not None:
        payload["after"] = jsonable(after)
    return AuditLog.objects.create(
        actor=user if user is not None and user.pk else None,
        actor_name=user.get_username() if user is not None else _os_user(source),
        source=source,
        action=action,
        target=target[:200],
        data=payload,
    )
