"""Pricing endpoints: a product's effective price, its price history, and the discount recompute shortcuts."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle
from rest_framework.views import APIView

from core.apis import StaffAPIView, task_status_read
from core.errors import Invalid, NotFound
from core.scheduler import SchedulerService
from core.serializers import ErrorSerializer, TaskStatusSerializer, TriggerAcceptedSerializer, TriggerDoneSerializer
from payments.serializers.pricing import (
    DiscountRecomputeQuerySerializer,
    EffectivePriceSerializer,
    PriceHistoryQuerySerializer,
    PriceHistorySerializer,
)
from payments.services.pricing import product_price_effective, product_price_history

DISCOUNT_RECOMPUTE_JOB = "discount_recompute"


class _ConfigurableRate:
    """A rate from REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"][scope] when set there, else `default_rate`."""

    scope: str
    default_rate: str
    THROTTLE_RATES: dict[str, str | None]

    def get_rate(self) -> str | None:
        return self.THROTTLE_RATES.get(self.scope) or self.default_rate


class PriceAnonRateThrottle(_ConfigurableRate, AnonRateThrottle):
    scope = "pricing_anon"
    default_rate = "60/min"


class PriceUserRateThrottle(_ConfigurableRate, UserRateThrottle):
    scope = "pricing_user"
    default_rate = "600/min"


class ProductPriceApi(APIView):
    """Anyone may ask; anonymous callers are throttled per IP, signed-in ones per user."""

    permission_classes = [AllowAny]
    throttle_classes = [PriceAnonRateThrottle, PriceUserRateThrottle]

    @extend_schema(
        responses={
            200: EffectivePriceSerializer,
            404: OpenApiResponse(ErrorSerializer, description="No such product"),
            429: OpenApiResponse(ErrorSerializer, description="Too many requests"),
        },
        summary="A product's effective price: the first-shipping batch's discounted price, else its base price",
    )
    def get(self, request: Request, pk: int) -> Response:
        return Response(EffectivePriceSerializer(product_price_effective(product_id=pk)).data)


class ProductPriceHistoryApi(StaffAPIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("from", OpenApiTypes.DATETIME, description="Start (default: 30 days before `to`)"),
            OpenApiParameter("to", OpenApiTypes.DATETIME, description="End, inclusive (default: now)"),
        ],
        responses={
            200: PriceHistorySerializer,
            400: OpenApiResponse(ErrorSerializer, description="A bad date, or `from` after `to`"),
            404: OpenApiResponse(ErrorSerializer, description="No such product"),
        },
        summary="A product's price history: each batch's effective price per 6-hour slot",
    )
    def get(self, request: Request, pk: int) -> Response:
        query = PriceHistoryQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        start, end = query.validated_data["from"], query.validated_data["to"]
        points = product_price_history(product_id=pk, start=start, end=end)
        return Response(PriceHistorySerializer({"product_id": pk, "from": start, "to": end, "points": points}).data)


class DiscountRecomputeTriggerApi(StaffAPIView):
    """The seed's shortcut for `POST admin/jobs/discount_recompute/trigger/`, parameters in the query string."""

    @extend_schema(
        request=None,
        parameters=[
            OpenApiParameter("days_threshold", int, description="1-365, default 30"),
            OpenApiParameter("async_task", bool, description="false: run inline and answer 200 with the summary"),
        ],
        responses={
            202: TriggerAcceptedSerializer,
            200: TriggerDoneSerializer,
            400: OpenApiResponse(ErrorSerializer, description="A bad or unknown parameter: the field and the reason"),
            503: OpenApiResponse(ErrorSerializer, description="The broker is unreachable"),
        },
        summary="Recompute discounts now (queued, or inline with async_task=false)",
    )
    def post(self, request: Request) -> Response:
        # Refuse a misspelt parameter rather than run with the default (`format` is DRF's own).
        unknown = sorted(set(request.query_params) - {*DiscountRecomputeQuerySerializer.ACCEPTED, "format"})
        if unknown:
            accepted = ", ".join(DiscountRecomputeQuerySerializer.ACCEPTED)
            raise Invalid({name: [f"Unknown parameter. Accepted: {accepted}."] for name in unknown})
        # The job's own parameter serializer, before anything is recorded or queued. A plain
        # dict, not the QueryDict: DRF reads a blank form value as "not given", and
        # `days_threshold=` must be refused, not run with the default.
        given = request.query_params.dict()
        query = DiscountRecomputeQuerySerializer(data=given)
        query.is_valid(raise_exception=True)
        params = {"days_threshold": query.validated_data["days_threshold"]} if "days_threshold" in given else {}
        sync = not query.validated_data["async_task"]
        run = SchedulerService.trigger_manual_update(
            DISCOUNT_RECOMPUTE_JOB, params, sync=sync, source="api", user_id=request.user.pk
        )
        data: dict[str, Any] = {
            "task_id": run.task_id,
            "job_run_id": run.id,
            "status": run.status,
            "status_url": request.build_absolute_uri(reverse("api:payments:discount-task-status", args=[run.task_id])),
        }
        if sync:
            data.update(summary=run.summary, error=run.error)
            return Response(TriggerDoneSerializer(data).data, status=status.HTTP_200_OK)
        return Response(TriggerAcceptedSerializer(data).data, status=status.HTTP_202_ACCEPTED)


class DiscountTaskStatusApi(StaffAPIView):
    @extend_schema(
        responses={200: TaskStatusSerializer, 404: OpenApiResponse(ErrorSerializer, description="Unknown task id")},
        summary="State and result of a task we issued (the recompute's, or any other)",
    )
    def get(self, request: Request, task_id: str) -> Response:
        data = task_status_read(task_id)
        if data is None:
            raise NotFound(f"No task with id {task_id!r}.")
        return Response(TaskStatusSerializer(data).data)
