from __future__ import annotations

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q


class Channel(models.TextChoices):
    EMAIL = "email", "Email"
    SMS = "sms", "SMS"
    PUSH = "push", "Push"


class NotificationTemplate(models.Model):
    """Subject and body in Django template syntax, one row per (key, channel).

    The same key may exist for several channels (`payment_failed` has an email and an
    SMS version); for push, `subject` is the notification's title.
    """

    key = models.SlugField(max_length=100)
    channel = models.CharField(max_length=10, choices=Channel.choices)
    subject = models.CharField(max_length=255, blank=True, help_text="Email subject or push title.")
    body = models.TextField()
    description = models.CharField(max_length=255, blank=True, help_text="What the template is for, and its context.")
    is_active = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key", "channel"]
        constraints = [models.UniqueConstraint(fields=["key", "channel"], name="notification_template_key_channel")]

    def __str__(self) -> str:
        return f"{self.key} ({self.channel})"


class PushDevice(models.Model):
    class Platform(models.TextChoices):
        ANDROID = "android", "Android"
        IOS = "ios", "iOS"
        WEB = "web", "Web"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="push_devices")
    token = models.CharField(max_length=4096, unique=True, help_text="The FCM registration token.")
    platform = models.CharField(max_length=10, choices=Platform.choices, default=Platform.ANDROID)
    active = models.BooleanField(default=True, db_index=True)
    deactivated_reason = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "active"], name="pushdevice_user_active")]

    def __str__(self) -> str:
        return f"{self.platform} device of user {self.user_id}"


class Notification(models.Model):
    """The outbox: one message on one channel to one address or device."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled (skipped)"

    channel = models.CharField(max_length=10, choices=Channel.choices, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="notifications"
    )
    to_address = models.CharField(max_length=4096, blank=True, help_text="Email, E.164 phone number or FCM token.")
    device = models.ForeignKey(
        PushDevice, null=True, blank=True, on_delete=models.SET_NULL, related_name="notifications"
    )
    template_key = models.CharField(max_length=100, db_index=True)
    subject = models.CharField(max_length=255, blank=True)
    body = models.TextField(blank=True)
    context = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    data = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder, help_text="Push data payload.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    provider = models.CharField(max_length=20, blank=True)
    provider_message_id = models.CharField(max_length=255, blank=True)
    # The caller's key; `dedupe_key` adds the channel (and device) so each row is unique.
    dedupe_group = models.CharField(max_length=255, db_index=True)
    dedupe_key = models.CharField(max_length=300, unique=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The recovery sweep: rows stuck in pending or sending, oldest first.
            models.Index(
                fields=["status", "enqueued_at"],
                name="notification_stuck",
                condition=Q(status__in=["pending", "sending"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.template_key} {self.channel} → {self.to_address[:40] or '-'} ({self.status})"


class DeadLetter(Notification):
    """Admin-only proxy: the failed messages, each with its error and a Retry action."""

    class Meta:
        proxy = True
        verbose_name = "dead letter (failed notification)"
        verbose_name_plural = "dead letters (failed notifications)"
