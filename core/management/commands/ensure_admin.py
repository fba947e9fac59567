"""Create the admin user from DJANGO_SUPERUSER_* once; later runs leave it alone."""

from __future__ import annotations

import os
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the superuser named by DJANGO_SUPERUSER_USERNAME if it does not exist."

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME") or "admin"
        if User.objects.filter(username=username).exists():
            self.stdout.write(f"Admin user {username!r} exists.")
            return
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD") or ""
        generated = not password
        if generated:
            password = secrets.token_urlsafe(12)
        email = os.environ.get("DJANGO_SUPERUSER_EMAIL") or "admin@example.com"
        User.objects.create_superuser(username=username, email=email, password=password)
        if generated:
            self.stdout.write(f"Created admin user {username!r} with password {password} (shown once).")
        else:
            self.stdout.write(f"Created admin user {username!r} (password from DJANGO_SUPERUSER_PASSWORD).")
