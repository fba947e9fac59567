from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import ngettext
from django_celery_beat.admin import PeriodicTaskAdmin as BeatPeriodicTaskAdmin
from django_celery_beat.models import ClockedSchedule, CrontabSchedule, IntervalSchedule, PeriodicTask, SolarSchedule
from django_celery_results.admin import TaskResultAdmin as ResultsTaskResultAdmin
from django_celery_results.models import GroupResult, TaskResult
from rest_framework.authtoken.models import TokenProxy

from core.admin_audit import AuditedModelAdmin, ViewOnlyModelAdmin
from core.beat import beat_leader_text
from core.catalog import InvalidJobParams, JobCatalog, UnknownJob
from core.errors import AppError, admin_message
from core.forms import JobParamsForm
from core.models import AuditLog, JobCatalogEntry, JobRun, OutboxIntent, User
from core.scheduler import SchedulerService, schedule_preview
from core.services.audit import audit_record


@admin.register(User)
class UserAdmin(AuditedModelAdmin[User], DjangoUserAdmin[User]):
    fieldsets = (*DjangoUserAdmin.fieldsets, ("Contact", {"fields": ("phone_number",)}))  # type: ignore[misc]
    list_display = ("username", "email", "phone_number", "is_staff", "is_active")

    def user_change_password(self, request: HttpRequest, id: str, form_url: str = "") -> HttpResponse:
        """Django saves the new password without save_model: audited here, never by value."""
        response = super().user_change_password(request, id, form_url)
        if request.method == "POST" and response.status_code == 302:
            audit_record(
                action="core.user.password_change",
                source="admin",
                actor=request.user.pk,
                target=f"core.user:{id}",
                after={"password": "(changed, not recorded)"},
            )
        return response


@admin.register(JobRun)
class JobRunAdmin(AuditedModelAdmin[JobRun]):
    list_display = (
        "job_key",
        "status",
        "progress_bar",
        "source",
        "queued_at",
        "started_at",
        "duration_ms",
        "attempts",
        "task_id",
    )
    list_filter = ("job_key", "status", "source")
    search_fields = ("task_id", "job_key", "error")
    date_hierarchy = "queued_at"
    readonly_fields = [f.name for f in JobRun._meta.fields]
    list_select_related = ("triggered_by",)
    actions = ["retry_runs"]
    audit_skip_actions = frozenset({"delete_selected", "retry_runs"})  # SchedulerService.retry_run audits
    change_form_template = "admin/core/jobrun_change_form.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[JobRun]:
        return super().get_queryset(request).select_related("triggered_by")

    @admin.display(description="progress")
    def progress_bar(self, run: JobRun) -> str:
        progress = run.progress
        if progress is None:
            return "-"
        return format_html(
            '<progress max="100" value="{}"></progress> {}', progress["percent"] or 0, _progress_text(progress)
        )

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: JobRun | None = None,
    ) -> HttpResponse:
        """The run page's progress bar and Flower link, from the run the view already read."""
        if obj is not None:
            progress = obj.progress
            context.update(
                progress=progress,
                progress_text=_progress_text(progress) if progress else "",
                unfinished=obj.status not in JobRun.FINISHED,
                flower_url=f"{settings.FLOWER_URL.rstrip('/')}/task/{obj.task_id}" if settings.FLOWER_URL else "",
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    @admin.action(description="Retry selected failed runs (same parameters)", permissions=["run_job"])
    def retry_runs(self, request: HttpRequest, queryset: QuerySet[JobRun]) -> None:
        for run in queryset:
            try:
                new = SchedulerService.retry_run(str(run.pk), source="admin", user_id=request.user.pk)
            except AppError as exc:
                admin_message(request, exc)
                continue
            messages.success(request, f"{run.job_key}: retry queued as task {new.task_id}.")

    def has_run_job_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(RUN_JOB_PERMISSION)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


RUN_JOB_PERMISSION = "core.run_job"


def _run_now(request: HttpRequest, keys: list[str]) -> None:
    if not request.user.has_perm(RUN_JOB_PERMISSION):
        messages.error(request, "You may look at jobs but not run them (permission core.run_job).")
        return
    started = []
    for key in keys:
        try:
            run = SchedulerService.trigger_manual_update(key, source="admin", user_id=request.user.pk)
        except AppError as exc:  # unknown job, bad parameters, broker down: said, not a 500 page
            admin_message(request, exc)
            continue
        started.append(f"{key} ({run.task_id})")
    if started:
        messages.success(
            request,
            ngettext("Started %(n)d job: %(jobs)s.", "Started %(n)d jobs: %(jobs)s.", len(started))
            % {"n": len(started), "jobs": ", ".join(started)},
        )


def _progress_text(progress: dict[str, Any]) -> str:
    done, total, percent, eta = progress["done"], progress["total"], progress["percent"], progress["eta_seconds"]
    if total is None:
        return f"{done} done"
    text = f"{percent:g}% ({done} / {total})" if percent is not None else f"{done} / {total}"
    if eta is not None:
        text += f", about {eta:g} s left"
    return text


@admin.register(JobCatalogEntry)
class JobCatalogAdmin(ViewOnlyModelAdmin[JobCatalogEntry]):
    """The catalog as an admin page, each job with a "Run now" button."""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_active and request.user.is_staff

    def get_urls(self) -> list[Any]:
        urls = [
            path("", self.admin_site.admin_view(self.catalog_view), name="core_jobcatalogentry_changelist"),
            path("<str:key>/run/", self.admin_site.admin_view(self.run_view), name="core_jobcatalogentry_run"),
            path("<str:key>/resume/", self.admin_site.admin_view(self.resume_view), name="core_jobcatalogentry_resume"),
        ]
        return urls

    def catalog_view(self, request: HttpRequest) -> HttpResponse:
        status = SchedulerService.get_task_status()
        context = {
            **self.admin_site.each_context(request),
            "title": "Job catalog",
            "jobs": status,
            "opts": self.model._meta,
            "can_run": request.user.has_perm(RUN_JOB_PERMISSION),
            "leader": beat_leader_text(),
        }
        return TemplateResponse(request, "admin/core/job_catalog.html", context)

    def resume_view(self, request: HttpRequest, key: str) -> HttpResponse:
        if request.method != "POST":
            return HttpResponse(status=405)
        if not request.user.has_perm(RUN_JOB_PERMISSION):
            raise PermissionDenied
        if SchedulerService.resume(key, source="admin", user_id=request.user.pk):
            messages.success(request, f"{key} resumed: beat sends it from its next slot.")
        else:
            messages.warning(request, f"{key} was not paused.")
        return HttpResponseRedirect(reverse("admin:core_jobcatalogentry_changelist"))

    def run_view(self, request: HttpRequest, key: str) -> HttpResponse:
        """GET: the job's parameter form. POST: queue the run, then show its page; errors re-show the form."""
        if request.method not in ("GET", "POST"):
            return HttpResponse(status=405)
        if not request.user.has_perm(RUN_JOB_PERMISSION):
            raise PermissionDenied
        try:
            job = JobCatalog.get(key)
        except UnknownJob as exc:
            admin_message(request, exc)
            return HttpResponseRedirect(reverse("admin:core_jobcatalogentry_changelist"))
        form = JobParamsForm(job, request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                run = SchedulerService.trigger_manual_update(
                    key, form.params(), source="admin", user_id=request.user.pk
                )
            except InvalidJobParams as exc:
                form.add_param_errors(dict(exc.errors))
            except AppError as exc:  # the broker is down: said on the form, the failed run is recorded
                admin_message(request, exc)
            else:
                messages.success(request, f"{key} queued as task {run.task_id}.")
                if not request.user.has_perm("core.view_jobrun"):  # may run jobs, may not read runs
                    return HttpResponseRedirect(reverse("admin:core_jobcatalogentry_changelist"))
                return HttpResponseRedirect(reverse("admin:core_jobrun_change", args=[run.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Run {key}",
            "job": job,
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/core/job_run_form.html", context)


admin.site.unregister(PeriodicTask)


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(AuditedModelAdmin[PeriodicTask], BeatPeriodicTaskAdmin):  # type: ignore[misc]  # django-celery-beat ships no type hints
    """django-celery-beat's admin, with "Run now" going through SchedulerService so runs are recorded."""

    actions = ["enable_tasks", "disable_tasks", "toggle_tasks", "run_now"]
    audit_prefix = "schedule"
    audit_action_names = {"enable_tasks": "enable", "disable_tasks": "disable", "toggle_tasks": "toggle"}
    audit_skip_actions = frozenset({"delete_selected", "run_now"})  # a trigger is audited by SchedulerService
    change_form_template = "admin/core/periodictask_change_form.html"

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        task = PeriodicTask.objects.filter(pk=object_id).select_related("interval", "crontab").first()
        extra = {**(extra_context or {}), "schedule_preview": schedule_preview(task) if task else None}
        return super().change_view(request, object_id, form_url, extra_context=extra)

    @admin.action(description="Run selected jobs now", permissions=["run_job"])
    def run_now(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        keys = []
        for task in queryset:
            job = JobCatalog.for_task(task.task)
            if job is None:
                messages.warning(request, f"{task.name} runs {task.task}, which is not in the job catalog.")
                continue
            keys.append(job.key)
        _run_now(request, keys)

    def has_run_job_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(RUN_JOB_PERMISSION)


class SourceFilter(admin.SimpleListFilter):
    title = "source"
    parameter_name = "source"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(JobRun.Source.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet[TaskResult]) -> QuerySet[TaskResult]:
        if not self.value():
            return queryset
        ids = JobRun.objects.filter(source=self.value()).values("task_id")
        return queryset.filter(task_id__in=ids)


class JobFilter(admin.SimpleListFilter):
    title = "job"
    parameter_name = "job"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(job.key, job.key) for job in JobCatalog.all()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[TaskResult]) -> QuerySet[TaskResult]:
        key = self.value()
        if not key:
            return queryset
        try:
            return queryset.filter(task_name=JobCatalog.get(key).task)
        except UnknownJob:
            return queryset.none()


admin.site.unregister(TaskResult)


@admin.register(TaskResult)
class TaskResultAdmin(AuditedModelAdmin[TaskResult], ResultsTaskResultAdmin):
    list_filter = (JobFilter, "status", SourceFilter, "task_name", "worker", "date_done")  # type: ignore[assignment]


@admin.register(AuditLog)
class AuditLogAdmin(ViewOnlyModelAdmin[AuditLog]):
    """View only: nobody edits or deletes the trail here; audit_logs_cleanup deletes old entries."""

    list_display = ("created_at", "actor_name", "source", "action", "target")
    list_filter = ("source", "action", ("actor", admin.RelatedOnlyFieldListFilter))
    search_fields = ("target", "action", "actor_name")
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in AuditLog._meta.fields]
    actions = None

    def get_queryset(self, request: HttpRequest) -> QuerySet[AuditLog]:
        return super().get_queryset(request).select_related("actor")


@admin.register(OutboxIntent)
class OutboxIntentAdmin(AuditedModelAdmin[OutboxIntent]):
    """The core outbox: what was asked to run, when it was published, and why not yet."""

    list_display = (
        "id",
        "task_name",
        "dedupe_key",
        "created_at",
        "not_before",
        "published_at",
        "completed_at",
        "attempts",
        "publishes",
        "task_id",
    )
    list_filter = (
        ("published_at", admin.EmptyFieldListFilter),
        ("completed_at", admin.EmptyFieldListFilter),
        "task_name",
    )
    search_fields = ("=dedupe_key", "=task_id", "task_name")
    readonly_fields = [f.name for f in OutboxIntent._meta.fields]
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _audit_third_party(model: type[Any], prefix: str = "", **attrs: Any) -> None:
    """Re-register a third-party admin with the audit mixin: its edits are operator actions too."""
    current = type(admin.site.get_model_admin(model))
    admin.site.unregister(model)
    audited = type(
        current.__name__, (AuditedModelAdmin, current), {"audit_prefix": prefix, "__module__": __name__, **attrs}
    )
    admin.site.register(model, audited)


# A schedule kind's edit changes every entry that uses it; tokens and groups grant access.
for _model, _prefix in (
    (IntervalSchedule, "schedule.interval"),
    (CrontabSchedule, "schedule.crontab"),
    (SolarSchedule, "schedule.solar"),
    (ClockedSchedule, "schedule.clocked"),
    (Group, ""),
    (GroupResult, ""),
):
    _audit_third_party(_model, _prefix)
_audit_third_party(TokenProxy, audit_str=False)  # a token's str() is its key: a credential
