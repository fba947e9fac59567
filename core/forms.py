"""The admin's "Run now" form, built from a job's parameter serializer.

The Django form renders the fields (type, bounds, help text, defaults filled in) and
coerces what was typed; the serializer stays the one validation of the parameters, as
for the API and the CLI, and its errors are shown on their fields.
"""

from __future__ import annotations

from typing import Any

from django import forms
from rest_framework import serializers

from core.catalog import Job


def _initial(field: serializers.Field[Any, Any, Any, Any]) -> Any:
    default = field.default
    if default is serializers.empty:
        return None
    return default() if callable(default) else default


def _form_field(name: str, field: serializers.Field[Any, Any, Any, Any]) -> forms.Field:
    options: dict[str, Any] = {
        "required": False,  # an empty field means "the job's default"; the serializer says what is required
        "label": name.replace("_", " ").capitalize(),
        "help_text": str(field.help_text or ""),
        "initial": _initial(field),
    }
    if isinstance(field, serializers.BooleanField):
        return forms.BooleanField(**options)
    if isinstance(field, serializers.IntegerField):
        return forms.IntegerField(min_value=field.min_value, max_value=field.max_value, **options)
    if isinstance(field, serializers.DecimalField | serializers.FloatField):
        return forms.DecimalField(**options)
    if isinstance(field, serializers.ChoiceField):
        return forms.ChoiceField(choices=[("", "(default)"), *field.choices.items()], **options)
    if isinstance(field, serializers.DateTimeField):
        return forms.DateTimeField(**options)
    if isinstance(field, serializers.DateField):
        return forms.DateField(widget=forms.DateInput(attrs={"type": "date"}), **options)
    if isinstance(field, serializers.ListField):
        options["help_text"] = f"{options['help_text']} Separate values with commas.".strip()
        return forms.CharField(**options)
    return forms.CharField(**options)


class JobParamsForm(forms.Form):
    def __init__(self, job: Job, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.job = job
        self.list_fields: set[str] = set()
        if job.params is not None:
            for name, field in job.params().fields.items():
                self.fields[name] = _form_field(name, field)
                if isinstance(field, serializers.ListField):
                    self.list_fields.add(name)

    def params(self) -> dict[str, Any]:
        """What was filled in, ready for the serializer (empty fields are left to the job's defaults)."""
        out: dict[str, Any] = {}
        for name, value in self.cleaned_data.items():
            if value is None or value == "":
                continue
            if name in self.list_fields:
                value = [part.strip() for part in str(value).split(",") if part.strip()]
            elif isinstance(value, bool) and not value and name not in self.data:
                continue
            out[name] = str(value) if not isinstance(value, bool | int | list) else value
        return out

    def add_param_errors(self, errors: dict[str, Any]) -> None:
        for name, reasons in errors.items():
            messages = reasons if isinstance(reasons, list) else [reasons]
            text = [str(m) for m in messages]
            self.add_error(name if name in self.fields else None, text)
