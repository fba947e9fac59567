from __future__ import annotations

from django.urls import path

from core import apis

urlpatterns = [
    path("admin/jobs/", apis.JobListApi.as_view(), name="job-list"),
    path("admin/jobs/runs/<str:run_id>/retry/", apis.JobRunRetryApi.as_view(), name="jobrun-retry"),
    path("admin/jobs/<str:key>/", apis.JobDetailApi.as_view(), name="job-detail"),
    path("admin/jobs/<str:key>/trigger/", apis.JobTriggerApi.as_view(), name="job-trigger"),
    path("admin/jobs/<str:key>/resume/", apis.JobResumeApi.as_view(), name="job-resume"),
    path("admin/tasks/<str:task_id>/", apis.TaskDetailApi.as_view(), name="task-detail"),
    path("admin/tasks/<str:task_id>/revoke/", apis.TaskRevokeApi.as_view(), name="task-revoke"),
]
