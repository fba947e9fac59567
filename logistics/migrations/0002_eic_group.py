from __future__ import annotations

from typing import Any

from django.db import migrations

EIC_GROUP = "eic"


def create_eic_group(apps: Any, schema_editor: Any) -> None:
    Group = apps.get_model("auth", "Group")
    Group.objects.get_or_create(name=EIC_GROUP)


def delete_eic_group(apps: Any, schema_editor: Any) -> None:
    # Only when empty: unapplying must not strip anyone of their role by surprise.
    Group = apps.get_model("auth", "Group")
    Group.objects.filter(name=EIC_GROUP, user__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("logistics", "0001_initial"),
    ]

    operations = [migrations.RunPython(create_eic_group, delete_eic_group)]
