from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers

from core.catalog import Every, Job


class DriverAssignmentExpiryParams(serializers.Serializer[dict[str, Any]]):
    timeout_seconds = serializers.IntegerField(
        min_value=1,
        max_value=86400,
        default=lambda: settings.DRIVER_ASSIGNMENT_TIMEOUT_SECONDS,
        help_text=(
            "Expire every offer made this many seconds ago or more. Omitted (as beat runs it), each offer "
            "expires at its own deadline, the one the driver was shown."
        ),
    )


JOBS = [
    Job(
        key="driver_assignment_expiry",
        task="logistics.check_expired_driver_assignments",
        description=(
            "Reset ASSIGNING stock requests whose offer passed its deadline unaccepted to PENDING and notify "
            "the EIC users; the safety net behind each offer's own expiry check."
        ),
        schedule=Every(seconds=60),
        params=DriverAssignmentExpiryParams,
        expires=55,
        lease_seconds=30,
        critical=True,
    ),
]
