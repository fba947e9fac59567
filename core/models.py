from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import RegexValidator
from django.db import models

e164_validator = RegexValidator(
    regex=r"^\+[1-9]\d{6,14}$", message="Enter a phone number in E.164 form, such as +14155550123."
)


class User(AbstractUser):
    """The project's user from the first migration, so the domain apps can add to it freely."""

    phone_number = models.CharField(max_length=16, blank=True, validators=[e164_validator])


class JobRun(models.Model):
    """One run of a catalog job, whatever started it."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        RETRYING = "retrying", "Retrying"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped (already running)"
        DUPLICATE = "duplicate", "Duplicate (slot already run)"
        REVOKED = "revoked", "Revoked"
        LOST = "lost", "Lost (its worker died)"

    class Source(models.TextChoices):
        BEAT = "beat", "Beat schedule"
        API = "api", "REST API"
        ADMIN = "admin", "Admin"
        SHELL = "shell", "Shell"
        CLI = "cli", "manage.py"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.SKIPPED, Status.DUPLICATE, Status.REVOKED, Status.LOST)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    job_key = models.CharField(max_length=100, db_index=True)
    task_name = models.CharField(max_length=200)
    task_id = models.CharField(max_length=255, unique=True)
    source = models.CharField(max_length=10, choices=Source.choices, db_index=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    # DjangoJSONEncoder: parameters and summaries may carry Decimal money and dates.
    params = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    summary = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=255, blank=True)
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    queued_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    # The scheduled fire time a beat run is for (core.slots); unique per job, so a slot sent
    # twice (two beats, a re-sent message) runs once. Empty for manual runs.
    slot = models.DateTimeField(null=True, blank=True)
    # A retry of a failed run (same job and parameters) points at the run it retries.
    retry_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries")
    # What the running service reported (core.progress): units done of a total, written at most once a second.
    progress_done = models.PositiveBigIntegerField(null=True, blank=True)
    progress_total = models.PositiveBigIntegerField(null=True, blank=True)
    progress_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-queued_at"]
        indexes = [models.Index(fields=["job_key", "-queued_at"], name="jobrun_job_recent")]
        constraints = [
            models.UniqueConstraint(
                fields=["job_key", "slot"], name="jobrun_one_run_per_slot", condition=models.Q(slot__isnull=False)
            )
        ]

    def __str__(self) -> str:
        return f"{self.job_key} {self.status} ({self.task_id})"

    @property
    def progress(self) -> dict[str, Any] | None:
        """Done, total, percent and an estimate of the seconds left; None when the job reports none."""
        from core.progress import progress_view

        return progress_view(
            done=self.progress_done,
            total=self.progress_total,
            status=self.status,
            started_at=self.started_at,
            finished=self.status in self.FINISHED,
        )


class JobState(models.Model):
    """What beat knows about a scheduled job across beat processes: the last slot sent, misses.

    The leader beat advances `last_slot` with a compare-and-set (core.beat), so however
    many beats run, each slot is sent once.
    """

    job_key = models.CharField(max_length=100, primary_key=True)
    last_slot = models.DateTimeField()
    last_sent_at = models.DateTimeField(null=True, blank=True)
    # Slots that came due while no beat was sending, and were not run (caught up or skipped).
    missed_slots = models.PositiveIntegerField(default=0)
    last_missed_at = models.DateTimeField(null=True, blank=True)
    # Runs that failed in a row; at the job's pause_after_failures beat stops sending it.
    consecutive_failures = models.PositiveIntegerField(default=0)
    paused_at = models.DateTimeField(null=True, blank=True)
    pause_reason = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.job_key} (last slot {self.last_slot:%Y-%m-%d %H:%M:%S})"


class OutboxIntent(models.Model):
    """The intent to run a task, recorded in the transaction whose change causes it.

    Published right after that transaction commits (core.services.outbox); the
    `outbox_relay` job publishes whatever was left behind, what has come due, and what the
    broker lost after taking it (published, never completed). `dedupe_key` makes
    recording the same intent twice a no-op; `task_id` stays the same however often the
    relay has to publish the row, so a duplicate is recognisable in the results.
    """

    id = models.BigAutoField(primary_key=True)
    task_name = models.CharField(max_length=200)
    kwargs = models.JSONField(default=dict)
    dedupe_key = models.CharField(max_length=255)
    task_id = models.UUIDField(default=uuid.uuid4, editable=False)
    not_before = models.DateTimeField(null=True, blank=True)
    # Tries to publish (failed ones included, with `last_error`), and publishes the broker took.
    attempts = models.PositiveIntegerField(default=0)
    publishes = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)
    # Set by the worker when the task ran to an end (succeeded or failed, not retrying): a
    # published row still without it long after was lost with the broker, and is published again.
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            # A constraint rather than unique=True: that would add a second, LIKE-pattern index on
            # PostgreSQL, which nothing reads and every insert of a sweep's thousands of rows pays for.
            models.UniqueConstraint(fields=["dedupe_key"], name="outbox_dedupe_key"),
        ]
        indexes = [
            # The relay walks only the unpublished rows, in id order: empty in steady state.
            models.Index(fields=["id"], name="outbox_unpublished", condition=models.Q(published_at__isnull=True)),
            # The relay's look for lost messages: only rows in flight, a few seconds' worth normally.
            models.Index(
                fields=["published_at"],
                name="outbox_in_flight",
                condition=models.Q(published_at__isnull=False, completed_at__isnull=True),
            ),
            # Pruning published rows past their retention.
            models.Index(fields=["published_at"], name="outbox_published_at"),
        ]

    def __str__(self) -> str:
        return f"{self.task_name} [{self.dedupe_key}]"


class AuditLog(models.Model):
    """An operator's action: who, what, on which object, from which entry point, before and after.

    Written by core.services.audit; view-only in the admin; deleted only by the
    audit_logs_cleanup job (maintenance.cleanup_old_audit_logs).
    """

    class Source(models.TextChoices):
        ADMIN = "admin", "Admin"
        API = "api", "REST API"
        CLI = "cli", "manage.py"
        SHELL = "shell", "Shell"
        SETUP = "setup", "Setup (jobs setup)"

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The actor's name when it was written: the entry outlives a deleted user.
    actor_name = models.CharField(max_length=150, blank=True)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.SHELL, db_index=True)
    action = models.CharField(max_length=100, db_index=True)
    target = models.CharField(max_length=200, blank=True)
    data = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.action} {self.target}"


class JobCatalogEntry(JobRun):
    """Admin-only proxy: the job catalog page ("Run now") hangs off this entry (the jobs are core.catalog.Job)."""

    class Meta:
        proxy = True
        permissions = [("run_job", "Can run catalog jobs now")]
        verbose_name = "job"
        verbose_name_plural = "jobs (catalog, run now)"
