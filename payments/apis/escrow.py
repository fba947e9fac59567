"""Escrow endpoints under /api/v1/escrow/: transactions, milestones, seller verification.

Parties see and act on their own transactions only: anyone else gets 404 (nothing reveals
that a transaction exists); a party outside their role gets 403; a transition the state
machine forbids gets 409 with the reason. Errors come from the services (core.errors).
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.apis import StaffAPIView
from core.errors import Invalid
from core.serializers import ErrorSerializer
from payments.models import EscrowTransaction, SellerVerification
from payments.serializers.escrow import (
    EscrowCreateInputSerializer,
    EscrowDetailSerializer,
    EscrowListSerializer,
    FundInputSerializer,
    MilestoneSubmitInputSerializer,
    ReasonInputSerializer,
    ReleaseInputSerializer,
    VerificationReviewInputSerializer,
    VerificationSerializer,
    VerificationSubmitInputSerializer,
)
from payments.services.escrow import (
    MilestoneSpec,
    escrow_cancel,
    escrow_create,
    escrow_dispute,
    escrow_get,
    escrow_visible_to,
)
from payments.services.escrow_funding import escrow_fund
from payments.services.escrow_milestones import escrow_release, milestone_approve, milestone_reject, milestone_submit
from payments.services.escrow_verification import verification_get, verification_review, verification_submit

NOT_FOUND = OpenApiResponse(ErrorSerializer, description="No such transaction, or not yours to see")
FORBIDDEN = OpenApiResponse(ErrorSerializer, description="A party acting outside their role")
CONFLICT = OpenApiResponse(ErrorSerializer, description="The state machine does not allow it now: the reason")
INVALID = OpenApiResponse(ErrorSerializer, description="Bad input: the field and the reason")


class EscrowPagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 200


def _detail(request: Request, transaction_id: int) -> Response:
    return Response(EscrowDetailSerializer(escrow_get(transaction_id=transaction_id, user=request.user)).data)


def _valid(serializer_class: type[Any], data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


class EscrowTransactionListCreateApi(APIView):
    # Declared for the schema (a paginated body, with limit and offset); get() paginates itself.
    pagination_class = EscrowPagination

    @extend_schema(
        parameters=[
            OpenApiParameter("status", str, enum=EscrowTransaction.Status.values, description="Only this status")
        ],
        responses={200: EscrowListSerializer(many=True)},
        summary="Your escrow transactions, as buyer or seller (staff: all), newest first",
    )
    def get(self, request: Request) -> Response:
        queryset: QuerySet[EscrowTransaction] = escrow_visible_to(request.user)
        wanted = request.query_params.get("status")
        if wanted is not None:
            if wanted not in EscrowTransaction.Status.values:
                raise Invalid({"status": [f"One of {', '.join(EscrowTransaction.Status.values)}."]})
            queryset = queryset.filter(status=wanted)
        paginator = EscrowPagination()
        page = paginator.paginate_queryset(queryset.order_by("-created_at", "-id"), request, view=self)
        return paginator.get_paginated_response(EscrowListSerializer(page, many=True).data)

    @extend_schema(
        request=EscrowCreateInputSerializer,
        responses={201: EscrowDetailSerializer, 400: INVALID},
        summary="Open an escrow transaction as the buyer; the milestone amounts must sum to the amount",
    )
    def post(self, request: Request) -> Response:
        data = _valid(EscrowCreateInputSerializer, request.data)
        escrow = escrow_create(
            buyer=request.user,
            seller_id=data["seller"],
            title=data["title"],
            description=data["description"],
            amount=data["amount"],
            currency=data["currency"],
            milestones=[MilestoneSpec(m["title"], m["amount"], m["due_date"]) for m in data["milestones"]],
        )
        body = EscrowDetailSerializer(escrow_get(transaction_id=escrow.pk, user=request.user)).data
        return Response(body, status=status.HTTP_201_CREATED)


class EscrowTransactionDetailApi(APIView):
    @extend_schema(
        responses={200: EscrowDetailSerializer, 404: NOT_FOUND}, summary="One transaction, its milestones and evidence"
    )
    def get(self, request: Request, pk: int) -> Response:
        return _detail(request, pk)


class EscrowFundApi(APIView):
    @extend_schema(
        request=FundInputSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER, description="Repeat it to retry safely"
            )
        ],
        responses={200: EscrowDetailSerializer, 400: INVALID, 403: FORBIDDEN, 404: NOT_FOUND, 409: CONFLICT},
        summary="Fund a created transaction (the buyer) through the gateway, once per Idempotency-Key",
    )
    def post(self, request: Request, pk: int) -> Response:
        data = _valid(FundInputSerializer, request.data)
        key = request.headers.get("Idempotency-Key") or data.get("idempotency_key") or ""
        escrow_fund(transaction_id=pk, user=request.user, idempotency_key=key)
        return _detail(request, pk)


class EscrowCancelApi(APIView):
    @extend_schema(
        request=None,
        responses={200: EscrowDetailSerializer, 403: FORBIDDEN, 404: NOT_FOUND, 409: CONFLICT},
        summary="Cancel a transaction that is not funded yet (either party)",
    )
    def post(self, request: Request, pk: int) -> Response:
        escrow_cancel(transaction_id=pk, user=request.user)
        return _detail(request, pk)


class EscrowDisputeApi(APIView):
    @extend_schema(
        request=ReasonInputSerializer,
        responses={200: EscrowDetailSerializer, 400: INVALID, 403: FORBIDDEN, 404: NOT_FOUND, 409: CONFLICT},
        summary="Dispute a funded or in-progress transaction (either party); the money stays held",
    )
    def post(self, request: Request, pk: int) -> Response:
        data = _valid(ReasonInputSerializer, request.data)
        escrow_dispute(transaction_id=pk, user=request.user, reason=data["reason"])
        return _detail(request, pk)


class EscrowReleaseApi(APIView):
    @extend_schema(
        request=ReleaseInputSerializer,
        responses={200: EscrowDetailSerializer, 403: FORBIDDEN, 404: NOT_FOUND, 409: CONFLICT},
        summary="Release the money of approved milestones (the buyer); the last release completes the transaction",
    )
    def post(self, request: Request, pk: int) -> Response:
        data = _valid(ReleaseInputSerializer, request.data)
        escrow_release(transaction_id=pk, user=request.user, milestone_id=data["milestone"])
        return _detail(request, pk)


class MilestoneSubmitApi(APIView):
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        request={"multipart/form-data": MilestoneSubmitInputSerializer},
        responses={200: EscrowDetailSerializer, 400: INVALID, 403: FORBIDDEN, 404: NOT_FOUND, 409: CONFLICT},
        summary="Submit a milestone with its evidence files (the seller); each file is checked after upload",
    )
    def post(self, request: Request, pk: int) -> Response:
        data = _valid(MilestoneSubmitInputSerializer, request.data)
        milestone = milestone_submit(milestone_id=pk, user=request.user, files=data["evidence"])
        return _detail(request, milestone.transaction_id)


class MilestoneApproveApi(APIView):
    @extend_schema(
        request=None,
        responses={200: EscrowDetailSerializer, 403: FORBIDDEN, 404: NOT_FOUND, 409: CONFLICT},
        summary="Approve a submitted milestone (the buyer)",
    )
    def post(self, request: Request, pk: int) -> Response:
        milestone = milestone_approve(milestone_id=pk, user=request.user)
        return _detail(request, milestone.transaction_id)


class MilestoneRejectApi(APIView):
    @extend_schema(
        request=ReasonInputSerializer,
        responses={200: EscrowDetailSerializer, 400: INVALID, 403: FORBIDDEN, 404: NOT_FOUND, 409: CONFLICT},
        summary="Reject a submitted milestone with a reason (the buyer); the seller may submit it again",
    )
    def post(self, request: Request, pk: int) -> Response:
        data = _valid(ReasonInputSerializer, request.data)
        milestone = milestone_reject(milestone_id=pk, user=request.user, reason=data["reason"])
        return _detail(request, milestone.transaction_id)


class SellerVerificationApi(APIView):
    @extend_schema(responses={200: VerificationSerializer, 404: NOT_FOUND}, summary="Your seller verification")
    def get(self, request: Request) -> Response:
        return Response(VerificationSerializer(verification_get(user=request.user)).data)

    @extend_schema(
        request=VerificationSubmitInputSerializer,
        responses={201: VerificationSerializer, 400: INVALID, 409: CONFLICT},
        summary="Ask to be verified as a seller (again after a rejection); staff review it",
    )
    def post(self, request: Request) -> Response:
        data = _valid(VerificationSubmitInputSerializer, request.data)
        verification = verification_submit(user=request.user, documents=data["documents"])
        return Response(VerificationSerializer(verification).data, status=status.HTTP_201_CREATED)


class SellerVerificationListApi(StaffAPIView):
    pagination_class = EscrowPagination  # for the schema, as above

    @extend_schema(
        parameters=[OpenApiParameter("status", str, enum=SellerVerification.Status.values)],
        responses={200: VerificationSerializer(many=True)},
        summary="Seller verifications, oldest pending first (staff)",
    )
    def get(self, request: Request) -> Response:
        queryset = SellerVerification.objects.order_by("submitted_at", "id")
        wanted = request.query_params.get("status")
        if wanted is not None:
            if wanted not in SellerVerification.Status.values:
                raise Invalid({"status": [f"One of {', '.join(SellerVerification.Status.values)}."]})
            queryset = queryset.filter(status=wanted)
        paginator = EscrowPagination()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(VerificationSerializer(page, many=True).data)


class SellerVerificationReviewApi(StaffAPIView):
    @extend_schema(
        request=VerificationReviewInputSerializer,
        responses={200: VerificationSerializer, 400: INVALID, 404: NOT_FOUND, 409: CONFLICT},
        summary="Decide a pending seller verification: VERIFIED, or REJECTED with a reason (staff)",
    )
    def post(self, request: Request, pk: int) -> Response:
        data = _valid(VerificationReviewInputSerializer, request.data)
        verification = verification_review(
            verification_id=pk, reviewer_id=int(request.user.pk or 0), status=data["status"], reason=data["reason"]
        )
        return Response(VerificationSerializer(verification).data)
