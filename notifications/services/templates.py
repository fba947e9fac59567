from __future__ import annotations

from notifications.default_templates import TEMPLATES
from notifications.models import NotificationTemplate


def notification_templates_install_defaults() -> dict[str, int]:
    """Create the default templates that are missing; leave existing ones (and their edits) alone."""
    existing = set(NotificationTemplate.objects.values_list("key", "channel"))
    missing = [
        NotificationTemplate(key=key, channel=channel, subject=subject, body=body, description=description)
        for key, channel, subject, body, description in TEMPLATES
        if (key, channel) not in existing
    ]
    NotificationTemplate.objects.bulk_create(missing, ignore_conflicts=True)
    return {"created": len(missing), "kept": len(TEMPLATES) - len(missing)}
