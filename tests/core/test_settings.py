from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

from config.celery import app

ROOT = Path(__file__).resolve().parents[2]


def test_celery_is_configured_as_the_design_says() -> None:
    conf = app.conf
    assert conf.accept_content == ["json"]
    assert conf.task_serializer == conf.result_serializer == "json"
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert (conf.task_time_limit, conf.task_soft_time_limit) == (1800, 1500)
    assert conf.worker_max_tasks_per_child == 1000
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit
    assert conf.worker_send_task_events and conf.task_track_started
    assert conf.result_backend == "django-db" and conf.result_extended
    assert conf.beat_scheduler == "core.beat:LeaderScheduler"  # DatabaseScheduler with a leader lease


def test_tasks_are_routed_to_their_domain_queue_by_name_prefix() -> None:
    router = app.amqp.router
    for name, queue in [
        ("core.beat_heartbeat", "default"),
        ("payments.check_payment_timeouts", "payments"),
        ("logistics.check_expired_driver_assignments", "logistics"),
        ("notifications.deliver", "notifications"),
        ("maintenance.cleanup_expired_carts", "maintenance"),
        ("celery.backend_cleanup", "maintenance"),
    ]:
        assert router.route({}, name)["queue"].name == queue, name


def test_check_deploy_is_clean_with_production_settings() -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(60),
        "DJANGO_ALLOWED_HOSTS": "jobs.example.com",
        "DJANGO_READ_DOT_ENV": "false",
        "DATABASE_URL": "postgres://app@db.internal:5432/app",
        "CELERY_BROKER_URL": "redis://redis.internal:6379/0",
        "REDIS_URL": "redis://redis.internal:6379/1",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_refuses_to_start_without_a_secret_key() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SECRET_KEY"}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.production",
        DJANGO_ALLOWED_HOSTS="jobs.example.com",
        DJANGO_READ_DOT_ENV="false",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


def test_production_refuses_to_fall_back_to_a_local_database_or_broker() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.production",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(60),
        DJANGO_ALLOWED_HOSTS="jobs.example.com",
        DJANGO_READ_DOT_ENV="false",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "DATABASE_URL" in result.stderr


def test_seed_003s_sender_names_are_read_when_ours_are_empty() -> None:
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "DEFAULT_FROM_EMAIL": "",
        "SENDGRID_FROM_EMAIL": "noreply@indostarnaturals.com",
        "TWILIO_PHONE_NUMBER": "+1234567890",
        "TWILIO_FROM_NUMBER": "",
    }
    code = "import django; django.setup(); from django.conf import settings as s; print(s.DEFAULT_FROM_EMAIL, s.TWILIO_FROM_NUMBER)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["noreply@indostarnaturals.com", "+1234567890"]
    env.update(DEFAULT_FROM_EMAIL="ops@example.com", TWILIO_FROM_NUMBER="+15005550006")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["ops@example.com", "+15005550006"]
