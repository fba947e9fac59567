from __future__ import annotations

from rest_framework import serializers

from core.catalog import Every, Job


class SleepParams(serializers.Serializer):
    seconds = serializers.IntegerField(min_value=0, max_value=600, default=5, help_text="How long to sleep.")


JOBS = [
    Job(
        key="beat_heartbeat",
        task="core.beat_heartbeat",
        description="Record the time beat last fired; /health/ reports beat down when it is older than two minutes.",
        schedule=Every(seconds=30),
    ),
    Job(
        key="sleep",
        task="core.sleep",
        description="Sleep for `seconds` and succeed: a harmless job for trying triggers and the overlap guard.",
        schedule=None,
        params=SleepParams,
        lease_seconds=30,
    ),
]
