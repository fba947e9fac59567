"""Logistics REST endpoints: the EIC's offer/cancel and the driver's list, accept and reject."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.serializers import ErrorSerializer
from logistics import selectors, services
from logistics.permissions import IsDriver, IsEIC
from logistics.serializers import (
    DriverTripInputSerializer,
    PendingOfferSerializer,
    StockRequestSerializer,
    StockRequestStatusInputSerializer,
)

_ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="Invalid body: the field and the reason"),
    401: OpenApiResponse(ErrorSerializer, description="Not authenticated"),
    403: OpenApiResponse(ErrorSerializer, description="Authenticated but not allowed"),
    404: OpenApiResponse(ErrorSerializer, description="No such stock request (or not yours)"),
    409: OpenApiResponse(ErrorSerializer, description="The state does not allow it: the reason"),
}


class EicStockRequestStatusApi(APIView):
    permission_classes = [IsAuthenticated, IsEIC]

    @extend_schema(
        request=StockRequestStatusInputSerializer,
        responses={200: StockRequestSerializer, **_ERRORS},
        summary="Offer a stock request's trip to a driver (ASSIGNING) or cancel it (CANCELLED)",
        tags=["logistics"],
    )
    def patch(self, request: Request, pk: int) -> Response:
        body = StockRequestStatusInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        if data["status"] == "ASSIGNING":
            outcome = services.stock_request_offer(
                stock_request_id=pk,
                driver_id=data["target_driver"],
                mode=data["assignment_mode"],
                offered_by=request.user,
            ).stock_request
        else:
            outcome = services.stock_request_cancel(stock_request_id=pk)
        outcome.refresh_from_db()
        return Response(StockRequestSerializer(outcome).data)


class DriverPendingOffersApi(APIView):
    permission_classes = [IsAuthenticated, IsDriver]

    @extend_schema(
        responses={200: PendingOfferSerializer(many=True), 401: _ERRORS[401], 403: _ERRORS[403]},
        summary="The calling driver's open trip offers, with the seconds left to accept",
        tags=["logistics"],
    )
    def get(self, request: Request) -> Response:
        now = selectors.database_now()  # the clock accept checks the deadline on
        offers = selectors.driver_pending_offers(driver=request.driver, now=now)  # type: ignore[attr-defined]
        return Response(PendingOfferSerializer(offers, many=True, context={"now": now}).data)


class DriverTripAcceptApi(APIView):
    permission_classes = [IsAuthenticated, IsDriver]

    @extend_schema(
        request=DriverTripInputSerializer,
        responses={200: StockRequestSerializer, **_ERRORS},
        summary="Accept a trip offer before its deadline (checked on the server)",
        tags=["logistics"],
    )
    def post(self, request: Request) -> Response:
        body = DriverTripInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        outcome = services.offer_accept(
            driver=request.driver,  # type: ignore[attr-defined]
            stock_request_id=body.validated_data["stock_request_id"],
        )
        return Response(StockRequestSerializer(outcome).data)


class DriverTripRejectApi(APIView):
    permission_classes = [IsAuthenticated, IsDriver]

    @extend_schema(
        request=DriverTripInputSerializer,
        responses={200: StockRequestSerializer, **_ERRORS},
        summary="Decline a trip offer: the request returns to PENDING and the EIC users are told",
        tags=["logistics"],
    )
    def post(self, request: Request) -> Response:
        body = DriverTripInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        outcome = services.offer_reject(
            driver=request.driver,  # type: ignore[attr-defined]
            stock_request_id=body.validated_data["stock_request_id"],
        )
        return Response(StockRequestSerializer(outcome).data)
