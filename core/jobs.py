from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core.catalog import Crontab, Every, Job


class CleanupJobRunsParams(serializers.Serializer[dict[str, Any]]):
    older_than_days = serializers.IntegerField(
        min_value=1,
        max_value=3650,
        required=False,
        help_text="Keep this many days of run history (JOBRUN_RETENTION_DAYS).",
    )


class SleepParams(serializers.Serializer[dict[str, Any]]):
    seconds = serializers.IntegerField(min_value=0, max_value=600, default=5, help_text="How long to sleep.")


JOBS = [
    Job(
        key="beat_heartbeat",
        task="core.beat_heartbeat",
        description="Record the time beat last fired; /health/ reports beat down when it is older than two minutes.",
        schedule=Every(seconds=30),
        # A heartbeat that missed its slots says nothing by running late: wait for the next one.
        misfire="skip",
        pause_after_failures=None,
    ),
    Job(
        key="job_runs_cleanup",
        task="core.cleanup_job_runs",
        description="Close runs left `running` by a dead worker, and delete finished runs past the retention period.",
        schedule=Crontab(minute="15", hour="4"),
        params=CleanupJobRunsParams,
    ),
    Job(
        key="outbox_relay",
        task="core.relay_outbox",
        description=(
            "Publish outbox intents that a lost commit hook, a dead process or a broker outage left behind, "
            "and those come due; delete published ones past OUTBOX_RETENTION_DAYS."
        ),
        schedule=Every(seconds=15),
        lease_seconds=60,
        critical=True,
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
