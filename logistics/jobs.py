from __future__ import annotations

from django.conf import settings
from rest_framework import serializers

from core.catalog import Every, Job


class DriverAssignmentExpiryParams(serializers.Serializer):
    timeout_seconds = serializers.IntegerField(
        min_value=1,
        max_value=86400,
        default=lambda: settings.DRIVER_ASSIGNMENT_TIMEOUT_SECONDS,
        help_text="Offers older than this many seconds expire (default: DRIVER_ASSIGNMENT_TIMEOUT_SECONDS).",
    )


JOBS = [
    Job(
        key="driver_assignment_expiry",
        task="logistics.check_expired_driver_assignments",
        description=(
            "Reset ASSIGNING stock requests whose driver did not accept within the timeout to PENDING "
            "and notify the EIC users; the safety net behind each offer's own expiry check."
        ),
        schedule=Every(seconds=60),
        params=DriverAssignmentExpiryParams,
        expires=55,
        lease_seconds=30,
    ),
]
