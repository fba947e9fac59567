"""The payment gateway's webhook: `POST /api/v1/webhooks/razorpay/`.

Razorpay signs the raw body with the webhook secret (hex HMAC-SHA256 in
`X-Razorpay-Signature`); a bad signature is refused with 400 and changes nothing. A
verified `payment.captured` or `payment.failed` completes or declines the subscription
charge with that payment id; an unknown payment id, a replay or another event is answered
200 with `outcome: ignored | duplicate`, so the gateway stops re-sending it.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from core.errors import Invalid
from core.serializers import ErrorSerializer
from payments.gateways import InvalidSignature, RazorpayGateway
from payments.serializers.subscriptions import WebhookOutcomeSerializer
from payments.services.subscriptions import subscription_charge_apply_event


class RazorpayWebhookApi(APIView):
    # The signature is the authentication: no session (so no CSRF), no token.
    authentication_classes = []
    permission_classes = [AllowAny]
    # Per client IP at REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["webhook"]: the gateway sends
    # from a few addresses; anyone else posting unsigned bodies is slowed down.
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "webhook"

    @extend_schema(
        request=OpenApiTypes.OBJECT,
        parameters=[
            OpenApiParameter(
                "X-Razorpay-Signature", str, OpenApiParameter.HEADER, required=True, description="hex HMAC-SHA256"
            )
        ],
        responses={
            200: WebhookOutcomeSerializer,
            400: OpenApiResponse(ErrorSerializer, description="Missing or bad signature: nothing changed"),
            429: OpenApiResponse(ErrorSerializer, description="Too many requests from this address"),
        },
        summary="Razorpay payment events (payment.captured, payment.failed) for subscription charges",
    )
    def post(self, request: Request) -> Response:
        gateway = RazorpayGateway.from_settings()
        # The raw bytes the signature covers; request.data would re-encode them.
        body = request.body
        try:
            event = gateway.parse_webhook(body=body, signature=request.headers.get(gateway.SIGNATURE_HEADER, ""))
        except InvalidSignature as exc:
            raise Invalid({"signature": [str(exc)]}, detail=f"Webhook refused: {exc}") from exc
        if event is None:
            return Response(WebhookOutcomeSerializer({"outcome": "ignored", "detail": "Not a payment event."}).data)
        outcome = subscription_charge_apply_event(gateway_name=gateway.name, event=event)
        return Response(WebhookOutcomeSerializer(outcome).data)
