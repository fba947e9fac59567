"""Default templates for every message the domain apps send; edited in the admin afterwards.

Installed only where missing, so an operator's edits survive re-running migrations.
"""

from django.db import migrations

from notifications.default_templates import TEMPLATES


def install(apps, schema_editor):
    NotificationTemplate = apps.get_model("notifications", "NotificationTemplate")
    for key, channel, subject, body, description in TEMPLATES:
        NotificationTemplate.objects.get_or_create(
            key=key, channel=channel, defaults={"subject": subject, "body": body, "description": description}
        )


def uninstall(apps, schema_editor):
    NotificationTemplate = apps.get_model("notifications", "NotificationTemplate")
    for key, channel, *_ in TEMPLATES:
        NotificationTemplate.objects.filter(key=key, channel=channel).delete()


class Migration(migrations.Migration):
    dependencies = [("notifications", "0001_initial")]

    operations = [migrations.RunPython(install, uninstall)]
