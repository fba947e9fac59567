"""Staff REST API for jobs and tasks: /api/v1/admin/jobs/ and /api/v1/admin/tasks/."""

from __future__ import annotations

from typing import Any

from django.db.models import Q
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect, JsonResponse
from django.urls import Resolver404, resolve, reverse
from django.views.decorators.csrf import csrf_exempt
from django_celery_results.models import TaskResult
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from core.errors import AppError, Conflict, NotFound
from core.models import JobRun
from core.scheduler import SchedulerService
from core.serializers import (
    JobDetailSerializer,
    JobStatusSerializer,
    RevokeInputSerializer,
    TaskStatusSerializer,
    TriggerAcceptedSerializer,
    TriggerDoneSerializer,
    TriggerInputSerializer,
)
from core.services.audit import audit_record


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """The one HTTP translation of errors: every API error body is `{"detail": ..., "errors": {...}}`.

    Application errors (core.errors) carry their own status; DRF's and Django's (401, 403,
    404, 405, 415, 429, a serializer's ValidationError) keep theirs, reshaped.
    """
    if isinstance(exc, AppError):
        return Response(exc.as_body(), status=exc.status_code)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    response.data = _error_body(response.data, validation=isinstance(exc, ValidationError))
    return response


def _error_body(data: Any, *, validation: bool) -> dict[str, Any]:
    if validation:
        errors = data if isinstance(data, dict) else {"non_field_errors": data if isinstance(data, list) else [data]}
        return {"detail": "Invalid input: " + _errors_text(errors), "errors": errors}
    if isinstance(data, dict) and "detail" in data:
        return {"detail": str(data["detail"]), "errors": {k: v for k, v in data.items() if k != "detail"}}
    return {"detail": str(data), "errors": {}}


def _errors_text(errors: dict[str, Any]) -> str:
    parts = []
    for name, reasons in errors.items():
        if isinstance(reasons, list):
            parts.append(f"{name}: {' '.join(str(r) for r in reasons)}")
        elif isinstance(reasons, dict):
            parts.append(f"{name}: {_errors_text(reasons)}")
        else:
            parts.append(f"{name}: {reasons}")
    return "; ".join(parts)


@csrf_exempt  # nothing to protect, and a POST must get this JSON 404, not the CSRF failure page
def api_not_found(request: HttpRequest, unmatched: str = "") -> HttpResponse:
    """Unknown URLs under /api/: the same JSON body as every other API error, not Django's HTML page.

    A URL that only lacks its trailing slash is redirected, as CommonMiddleware would (this
    catch-all matches first, so APPEND_SLASH alone would not).
    """
    path = request.path_info
    if not path.endswith("/"):
        try:
            match = resolve(path + "/")
        except Resolver404:
            match = None
        if match is not None and match.func is not api_not_found:
            return HttpResponsePermanentRedirect(request.get_full_path(force_append_slash=True))
    return JsonResponse({"detail": f"No API endpoint at {path}.", "errors": {}}, status=404)


class StaffAPIView(APIView):
    permission_classes = [IsAdminUser]


class JobListApi(StaffAPIView):
    @extend_schema(responses=JobStatusSerializer(many=True), summary="List catalog jobs with their status")
    def get(self, request: Request) -> Response:
        return Response(JobStatusSerializer(SchedulerService.get_task_status(), many=True).data)


class JobDetailApi(StaffAPIView):
    @extend_schema(responses={200: JobDetailSerializer, 404: OpenApiResponse(description="Unknown job key")})
    def get(self, request: Request, key: str) -> Response:
        return Response(JobDetailSerializer(SchedulerService.get_job_detail(key)).data)


class JobResumeApi(StaffAPIView):
    @extend_schema(
        request=None,
        responses={
            200: JobStatusSerializer,
            404: OpenApiResponse(description="Unknown job key"),
            409: OpenApiResponse(description="The job is not paused"),
        },
        summary="Resume a job paused after repeated failures",
    )
    def post(self, request: Request, key: str) -> Response:
        if not SchedulerService.resume(key, source="api", user_id=request.user.pk):
            raise Conflict(f"{key} is not paused.")
        return Response(JobStatusSerializer(SchedulerService.get_task_status(key)).data)


class JobTriggerApi(StaffAPIView):
    @extend_schema(
        request=TriggerInputSerializer,
        responses={
            202: TriggerAcceptedSerializer,
            200: TriggerDoneSerializer,
            400: OpenApiResponse(description="Invalid parameters: the field and the reason"),
            404: OpenApiResponse(description="Unknown job key"),
            503: OpenApiResponse(description="The broker is unreachable"),
        },
        summary="Run a job now (queued, or inline with async=false)",
    )
    def post(self, request: Request, key: str) -> Response:
        SchedulerService.get_task_status(key)  # 404 before validating the body
        body = TriggerInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        sync = not body.validated_data["async"]
        run = SchedulerService.trigger_manual_update(
            key, body.validated_data["params"], sync=sync, source="api", user_id=request.user.pk
        )
        data = _run_reference(request, run)
        if sync:
            data.update(summary=run.summary, error=run.error)
            return Response(TriggerDoneSerializer(data).data, status=status.HTTP_200_OK)
        return Response(TriggerAcceptedSerializer(data).data, status=status.HTTP_202_ACCEPTED)


_JOB_TO_CELERY_STATE: dict[str, str] = {
    JobRun.Status.QUEUED: "PENDING",
    JobRun.Status.RUNNING: "STARTED",
    JobRun.Status.RETRYING: "RETRY",
    JobRun.Status.SUCCEEDED: "SUCCESS",
    JobRun.Status.FAILED: "FAILURE",
    JobRun.Status.SKIPPED: "SUCCESS",
    JobRun.Status.DUPLICATE: "SUCCESS",
    JobRun.Status.REVOKED: "REVOKED",
    JobRun.Status.LOST: "FAILURE",
}


def task_status_read(task_id: str) -> dict[str, Any] | None:
    """What we know of a task id from our own rows; None when we never issued it."""
    run = JobRun.objects.filter(task_id=task_id).first()
    result = TaskResult.objects.filter(task_id=task_id).first()
    if run is None and result is None:
        return None
    if result is not None:
        state, payload = result.status, _decode(result.result)
        date_done, tb, name = result.date_done, result.traceback, result.task_name
    else:
        assert run is not None
        state, payload, date_done, tb, name = _JOB_TO_CELERY_STATE[run.status], run.summary, None, None, run.task_name
    if run is not None and run.status == JobRun.Status.REVOKED:
        state = "REVOKED"
    return {
        "task_id": task_id,
        "task_name": name or (run.task_name if run else None),
        "state": state,
        "result": payload,
        "traceback": tb,
        "date_done": date_done,
        "job_run": run,
    }


def _decode(raw: str | None) -> Any:
    import json

    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


class TaskDetailApi(StaffAPIView):
    @extend_schema(responses={200: TaskStatusSerializer, 404: OpenApiResponse(description="Unknown task id")})
    def get(self, request: Request, task_id: str) -> Response:
        data = task_status_read(task_id)
        if data is None:
            raise NotFound(f"No task with id {task_id!r}.")
        return Response(TaskStatusSerializer(data).data)


class TaskRevokeApi(StaffAPIView):
    @extend_schema(
        request=RevokeInputSerializer,
        responses={202: TaskStatusSerializer, 404: OpenApiResponse(description="Unknown task id")},
        summary="Revoke a queued task (terminate=true also kills a running one)",
    )
    def post(self, request: Request, task_id: str) -> Response:
        known = (
            JobRun.objects.filter(task_id=task_id).exists() or TaskResult.objects.filter(Q(task_id=task_id)).exists()
        )
        if not known:
            raise NotFound(f"No task with id {task_id!r}.")
        body = RevokeInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        from celery import current_app

        from core.services.jobruns import jobrun_mark_revoked

        terminate = body.validated_data["terminate"]
        current_app.control.revoke(task_id, terminate=terminate)
        # Without terminate a running task finishes; only a waiting one is closed now.
        jobrun_mark_revoked(task_id=task_id, running_too=terminate)
        audit_record(
            action="task.revoke", source="api", actor=request.user.pk, target=f"task:{task_id}", terminate=terminate
        )
        return Response(TaskStatusSerializer(task_status_read(task_id)).data, status=status.HTTP_202_ACCEPTED)


class JobRunRetryApi(StaffAPIView):
    @extend_schema(
        request=None,
        responses={
            202: TriggerAcceptedSerializer,
            404: OpenApiResponse(description="No such run"),
            409: OpenApiResponse(description="The run did not fail"),
            503: OpenApiResponse(description="The broker is unreachable"),
        },
        summary="Retry a failed run with the same parameters (a new run, linked to the first)",
    )
    def post(self, request: Request, run_id: str) -> Response:
        run = SchedulerService.retry_run(run_id, source="api", user_id=request.user.pk)
        return Response(TriggerAcceptedSerializer(_run_reference(request, run)).data, status=status.HTTP_202_ACCEPTED)


def _run_reference(request: Request, run: JobRun) -> dict[str, Any]:
    """What a trigger answers: the run, its task and where to follow it."""
    return {
        "task_id": run.task_id,
        "job_run_id": run.id,
        "status": run.status,
        "status_url": request.build_absolute_uri(reverse("api:task-detail", args=[run.task_id])),
    }
