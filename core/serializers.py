from __future__ import annotations

from typing import Any

from drf_spectacular.utils import inline_serializer
from rest_framework import serializers

# The serializers read dicts built by the services (and lists of them with many=True).


class TriggerInputSerializer(serializers.Serializer[Any]):
    params = serializers.DictField(required=False, default=dict, help_text="The job's parameters.")

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        fields = super().get_fields()
        # `async` is a Python keyword, so it cannot be a class attribute.
        fields["async"] = serializers.BooleanField(
            required=False, default=True, help_text="false runs the job inline and returns its summary."
        )
        return fields


class ParamFieldSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    type = serializers.CharField()
    required = serializers.BooleanField()  # type: ignore[assignment]
    default = serializers.JSONField(allow_null=True)
    help_text = serializers.CharField()  # type: ignore[assignment]


class JobStatusSerializer(serializers.Serializer[Any]):
    key = serializers.CharField()
    task = serializers.CharField()
    queue = serializers.CharField()
    description = serializers.CharField()
    scheduled = serializers.BooleanField()
    enabled = serializers.BooleanField()
    schedule = serializers.CharField()
    default_schedule = serializers.CharField()
    last_run_at = serializers.DateTimeField(allow_null=True)
    next_run_at = serializers.DateTimeField(allow_null=True)
    total_run_count = serializers.IntegerField()
    runs_recorded = serializers.IntegerField()
    last_status = serializers.CharField(allow_null=True)
    last_summary = serializers.JSONField(allow_null=True)
    last_error = serializers.CharField(allow_blank=True)
    last_task_id = serializers.CharField(allow_null=True)
    params = ParamFieldSerializer(many=True)
    misfire = serializers.CharField(help_text="run_once: one catch-up run after beat was down; skip: none")
    critical = serializers.BooleanField(help_text="/health/ answers 503 while this job is late")
    late = serializers.BooleanField(help_text="the last run started more than its period plus grace ago")
    late_seconds = serializers.IntegerField(allow_null=True)
    paused = serializers.BooleanField(help_text="beat stopped sending it after repeated failures")
    paused_at = serializers.DateTimeField(allow_null=True)
    pause_reason = serializers.CharField(allow_blank=True)
    consecutive_failures = serializers.IntegerField()
    missed_slots = serializers.IntegerField(help_text="slots that came due while no beat was sending")
    last_slot = serializers.DateTimeField(allow_null=True, help_text="the newest slot beat has sent (or skipped)")


class FireTimeSerializer(serializers.Serializer[Any]):
    local = serializers.DateTimeField(help_text="in the schedule's time zone")
    utc = serializers.DateTimeField()
    dst = serializers.CharField(allow_blank=True, help_text="skipped or repeated wall-clock time, if any")


class SchedulePreviewSerializer(serializers.Serializer[Any]):
    timezone = serializers.CharField()
    next_fire_times = FireTimeSerializer(many=True)
    warnings = serializers.ListField(child=serializers.CharField())


class JobDetailSerializer(JobStatusSerializer):
    preview = SchedulePreviewSerializer(allow_null=True, help_text="the next 10 fire times")


class ProgressSerializer(serializers.Serializer[Any]):
    done = serializers.IntegerField(help_text="Units of work done (rows, batches, seconds: the job's own unit).")
    total = serializers.IntegerField(allow_null=True, help_text="Units in all, as counted when each phase started.")
    percent = serializers.FloatField(allow_null=True)
    eta_seconds = serializers.FloatField(
        allow_null=True, help_text="Estimated seconds left, from the rate so far; null once finished."
    )


class JobRunSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField()
    job = serializers.CharField(source="job_key")
    task_id = serializers.CharField()
    source = serializers.CharField()  # type: ignore[assignment]
    status = serializers.CharField()
    params = serializers.JSONField()
    summary = serializers.JSONField(allow_null=True)
    error = serializers.CharField(allow_blank=True)
    attempts = serializers.IntegerField()
    queued_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    duration_ms = serializers.IntegerField(allow_null=True)
    progress = ProgressSerializer(
        allow_null=True,
        read_only=True,
        help_text="What a long job reported (updated at most once a second); null for jobs that report none.",
    )


class TriggerAcceptedSerializer(serializers.Serializer[Any]):
    task_id = serializers.CharField()
    job_run_id = serializers.UUIDField()
    status = serializers.CharField()
    status_url = serializers.CharField()


class TriggerDoneSerializer(TriggerAcceptedSerializer):
    summary = serializers.JSONField(allow_null=True)
    error = serializers.CharField(allow_blank=True)


class TaskStatusSerializer(serializers.Serializer[Any]):
    task_id = serializers.CharField()
    task_name = serializers.CharField(allow_null=True)
    state = serializers.CharField(
        help_text="Celery state: PENDING (queued), STARTED, RETRY, SUCCESS, FAILURE, REVOKED."
    )
    result = serializers.JSONField(allow_null=True)
    traceback = serializers.CharField(allow_null=True)
    date_done = serializers.DateTimeField(allow_null=True)
    job_run = JobRunSerializer(allow_null=True)


class RevokeInputSerializer(serializers.Serializer[Any]):
    terminate = serializers.BooleanField(
        required=False, default=False, help_text="Also kill the task if a worker is already running it."
    )


# Every API error body (core.apis.exception_handler): the reason, and each field's reasons.
# Built inline: a Serializer class cannot declare a field named `errors` (it is a property).
ErrorSerializer = inline_serializer(
    name="Error",
    fields={
        "detail": serializers.CharField(help_text="What went wrong, in words a caller can show."),
        "errors": serializers.DictField(
            child=serializers.ListField(child=serializers.CharField()),
            help_text="For invalid input: each field's reasons; empty otherwise.",
        ),
    },
)
