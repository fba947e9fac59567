"""The subscription templates (subscription_charged, subscription_out_of_stock) for existing databases.

Runs 0002's install again: it creates only the (key, channel) rows that are missing, so an
operator's edits to existing templates are never overwritten. Nothing to undo: the rows
belong to notifications/default_templates.py, which 0002's reverse removes.
"""

from importlib import import_module

from django.db import migrations

install = import_module("notifications.migrations.0002_default_templates").install


class Migration(migrations.Migration):
    dependencies = [("notifications", "0003_dead_letter_proxy")]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
