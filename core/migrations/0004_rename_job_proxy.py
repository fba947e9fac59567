# The admin-only proxy `Job` is renamed so it no longer shares a name with core.catalog.Job.
# RenameModel (not delete + create) keeps its content type, so the `core.run_job`
# permission granted to users and groups stays theirs.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0003_outbox_intent"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.RenameModel(old_name="Job", new_name="JobCatalogEntry"),
    ]
