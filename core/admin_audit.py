"""The admin's side of the audit trail: every ModelAdmin of the project derives from AuditedModelAdmin.

Adds, changes (the changed fields, before and after), deletions (one or many) and
admin actions (which rows) each write a core.AuditLog entry from source "admin".
Fields whose name says they hold a secret are recorded as changed, never by value.
tests/core/test_audit.py fails when a registered admin does not derive from it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from django.contrib import admin
from django.db.models import Model, QuerySet
from django.forms import BaseModelFormSet, ModelChoiceField, ModelForm, ModelMultipleChoiceField
from django.http import HttpRequest

from core.services.audit import audit_record

_M = TypeVar("_M", bound=Model)

SECRET_WORDS = ("password", "secret", "token", "key_hash")
MAX_IDS = 1000


def _visible(name: str, value: Any) -> Any:
    return "(changed, not recorded)" if any(word in name for word in SECRET_WORDS) else value


def _initial(form: ModelForm[Any], name: str) -> Any:
    """A field's value before the edit, as `after` records it: a foreign key's row, not its bare pk."""
    value = form.initial.get(name)
    field = form.fields.get(name)
    if isinstance(field, ModelMultipleChoiceField) or not isinstance(field, ModelChoiceField) or value is None:
        return value
    queryset = field.queryset
    return (queryset.filter(pk=value).first() if queryset is not None else None) or value


def _selection(queryset: QuerySet[Any]) -> tuple[list[Any], int]:
    """The first MAX_IDS primary keys of what was selected, and how many rows it is (counted only past that)."""
    ids = list(queryset.values_list("pk", flat=True)[: MAX_IDS + 1])
    return ids[:MAX_IDS], len(ids) if len(ids) <= MAX_IDS else queryset.count()


class AuditedModelAdmin(admin.ModelAdmin[_M]):
    # The action names' prefix ("schedule" → schedule.change); the model's label by default.
    audit_prefix: ClassVar[str] = ""
    # Admin actions' names as audited (enable_tasks → enable); others keep their own name.
    audit_action_names: ClassVar[dict[str, str]] = {}
    # Actions audited elsewhere (delete_selected by delete_queryset, triggers by SchedulerService).
    audit_skip_actions: ClassVar[frozenset[str]] = frozenset({"delete_selected"})
    # False where str(obj) is itself a secret (DRF's Token is its key): the target is the pk only.
    audit_str: ClassVar[bool] = True

    def audit_action(self, what: str) -> str:
        """`what` under the prefix; a name with a dot (deadletter.retry) is used as it is."""
        return what if "." in what else f"{self.audit_prefix or self.opts.label_lower}.{what}"

    def audit_target(self, obj: Model) -> str:
        return f"{self.opts.label_lower}:{obj.pk}" + (f" {obj}" if self.audit_str else "")

    def save_model(self, request: HttpRequest, obj: _M, form: ModelForm[_M], change: bool) -> None:
        changed = list(form.changed_data)
        before = {name: _visible(name, _initial(form, name)) for name in changed} if change else None
        super().save_model(request, obj, form, change)
        after = {name: _visible(name, form.cleaned_data.get(name)) for name in changed}
        audit_record(
            action=self.audit_action("change" if change else "create"),
            source="admin",
            actor=request.user,
            target=self.audit_target(obj),
            before=before,
            after=after,
        )

    def save_formset(self, request: HttpRequest, form: Any, formset: BaseModelFormSet[Any, Any], change: bool) -> None:
        """Rows of inlines: each added, changed or deleted one, on its own entry."""
        super().save_formset(request, form, formset, change)
        label = formset.model._meta.label_lower if formset.model is not None else "inline"
        for obj in formset.new_objects:
            audit_record(action=f"{label}.create", source="admin", actor=request.user, target=f"{label}:{obj.pk}")
        for obj, fields in formset.changed_objects:
            audit_record(
                action=f"{label}.change",
                source="admin",
                actor=request.user,
                target=f"{label}:{obj.pk}",
                after={name: _visible(name, getattr(obj, name, None)) for name in fields},
            )
        for obj in formset.deleted_objects:
            audit_record(action=f"{label}.delete", source="admin", actor=request.user, target=f"{label}:{obj}")

    def delete_model(self, request: HttpRequest, obj: _M) -> None:
        target = self.audit_target(obj)
        super().delete_model(request, obj)
        audit_record(action=self.audit_action("delete"), source="admin", actor=request.user, target=target)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[_M]) -> None:
        ids, count = _selection(queryset)
        super().delete_queryset(request, queryset)
        audit_record(
            action=self.audit_action("delete"),
            source="admin",
            actor=request.user,
            target=f"{self.opts.label_lower}: {count} rows",
            ids=ids,
            count=count,
        )

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        audited: dict[str, Any] = {}
        for name, entry in (super().get_actions(request) or {}).items():
            if entry is None:
                continue
            func, _, description = entry
            audited[name] = (func if name in self.audit_skip_actions else self._audited(func, name), name, description)
        return audited

    def _audited(self, func: Callable[..., Any], name: str) -> Callable[..., Any]:
        label = self.opts.label_lower
        action = self.audit_action(self.audit_action_names.get(name, name))

        @functools.wraps(func)
        def run(modeladmin: Any, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
            ids, count = _selection(queryset)
            response = func(modeladmin, request, queryset)
            audit_record(
                action=action,
                source="admin",
                actor=request.user,
                target=f"{label}: {count} selected",
                ids=ids,
                count=count,
            )
            return response

        return run


class ViewOnlyModelAdmin(AuditedModelAdmin[_M]):
    """Rows written by the services (or the trail itself): nobody adds, edits or deletes them here."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
