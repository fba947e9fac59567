"""Staff API: POST /api/v1/admin/notifications/{id}/retry/ (the dead-letter view's Retry)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import Conflict, NotFound
from core.services.audit import audit_record
from notifications.models import Notification
from notifications.services import notification_retry


class NotificationOutputSerializer(serializers.ModelSerializer[Notification]):
    class Meta:
        model = Notification
        fields = (
            "id",
            "channel",
            "template_key",
            "to_address",
            "status",
            "attempts",
            "last_error",
            "provider",
            "provider_message_id",
            "dedupe_key",
            "created_at",
            "sent_at",
        )


class NotificationRetryApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        request=None,
        responses={
            202: NotificationOutputSerializer,
            404: OpenApiResponse(description="Unknown notification id"),
            409: OpenApiResponse(description="The notification is not failed"),
        },
        summary="Send a failed notification again",
    )
    def post(self, request: Request, notification_id: int) -> Response:
        notification = Notification.objects.filter(pk=notification_id).first()
        if notification is None:
            raise NotFound(f"No notification with id {notification_id}.")
        result = notification_retry(notification_ids=[notification.pk])
        notification.refresh_from_db()
        if not result["retried"]:
            raise Conflict(f"Only failed notifications can be retried; this one is {notification.status}.")
        audit_record(
            action="deadletter.retry",
            source="api",
            actor=request.user.pk,
            target=f"notifications.notification:{notification.pk}",
            ids=[notification.pk],
        )
        return Response(NotificationOutputSerializer(notification).data, status=status.HTTP_202_ACCEPTED)
