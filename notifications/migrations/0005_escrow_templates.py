"""The escrow templates (payments' escrow notifications): installed where missing, never overwriting an edit.

Only the `escrow_*` keys: the other defaults were installed by 0002 (and later migrations).
"""

from django.db import migrations

from notifications.default_templates import TEMPLATES

ESCROW_PREFIX = "escrow_"


def install(apps, schema_editor):
    NotificationTemplate = apps.get_model("notifications", "NotificationTemplate")
    for key, channel, subject, body, description in TEMPLATES:
        if key.startswith(ESCROW_PREFIX):
            NotificationTemplate.objects.get_or_create(
                key=key, channel=channel, defaults={"subject": subject, "body": body, "description": description}
            )


def uninstall(apps, schema_editor):
    NotificationTemplate = apps.get_model("notifications", "NotificationTemplate")
    NotificationTemplate.objects.filter(key__startswith=ESCROW_PREFIX).delete()


class Migration(migrations.Migration):
    dependencies = [("notifications", "0004_subscription_templates")]

    operations = [migrations.RunPython(install, uninstall)]
