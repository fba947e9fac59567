"""Security gates run by `make test`: Django's deploy checks on production settings, bandit, pip-audit,
constant-time secret comparisons, and the production transport (HSTS, secure cookies)."""

from __future__ import annotations

import ast
import json
import os
import re
import secrets
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]
APPS = ("core", "notifications", "payments", "logistics", "maintenance", "config")
DOCS = ROOT / "docs" / "security.md"


def production_env(**extra: str) -> dict[str, str]:
    """What production requires (config/settings/production.py), pointed at this test run's stores."""
    db = settings.DATABASES["default"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST"))}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.production",
        DJANGO_READ_DOT_ENV="false",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(60),
        DJANGO_ALLOWED_HOSTS="testserver,shop.example.com",
        DATABASE_URL=_database_url(db),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        REDIS_URL=settings.REDIS_URL,
    )
    env.update(extra)
    return env


def _database_url(db: dict[str, Any]) -> str:
    """The test database (the one pytest-django created) as a URL for another process."""
    from urllib.parse import quote

    credentials = quote(db["USER"] or "", safe="") + (":" + quote(db["PASSWORD"], safe="") if db["PASSWORD"] else "")
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def run_python(code: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# DEPLOY CHECKS
# ------------------------------------------------------------------------------
def test_the_deploy_checks_pass_on_production_settings_with_warnings_as_failures() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=production_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.django_db(transaction=True)
def test_production_serves_hsts_and_secure_cookies_to_the_admin_and_the_api_and_redirects_plain_http() -> None:
    # Given a production process and a staff user (made there: production hashes with its own hashers)
    # When it signs in to the admin over HTTPS and calls the API
    result = run_python(
        """
        import json, django
        django.setup()
        from django.test import Client
        from core.models import User
        User.objects.create_user(username="prod-admin", password="pw-prod-admin-1", is_staff=True, is_superuser=True)
        client = Client()
        login = client.post(
            "/admin/login/?next=/admin/", {"username": "prod-admin", "password": "pw-prod-admin-1"}, secure=True
        )
        api = client.get("/api/v1/admin/jobs/", secure=True)
        plain = Client().get("/api/v1/admin/jobs/")
        cookie = lambda r, name: {k: r.cookies[name][k] for k in ("secure", "httponly", "samesite")}
        print(json.dumps({
            "login": login.status_code,
            "login_hsts": login.headers.get("Strict-Transport-Security"),
            "session": cookie(login, "sessionid"),
            "csrf": cookie(login, "csrftoken"),
            "api": api.status_code,
            "api_hsts": api.headers.get("Strict-Transport-Security"),
            "plain": plain.status_code,
            "plain_location": plain.headers.get("Location"),
        }))
        """,
        production_env(),
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    # Then both answer with HSTS for a year, subdomains included; cookies are Secure (the session also HttpOnly)
    hsts = "max-age=31536000; includeSubDomains; preload"
    assert (seen["login"], seen["login_hsts"]) == (302, hsts)
    assert (seen["api"], seen["api_hsts"]) == (200, hsts)
    assert seen["session"]["secure"] is True and seen["session"]["httponly"] is True
    assert seen["csrf"]["secure"] is True
    # and plain HTTP is sent to HTTPS
    assert seen["plain"] == 301 and seen["plain_location"].startswith("https://")


# BANDIT
# ------------------------------------------------------------------------------
def _accepted_bandit_findings() -> set[tuple[str, str]]:
    """The (file, test id) pairs docs/security.md lists, each with the reason it is accepted."""
    rows = re.findall(r"^\| `([^`]+)` \| (B\d{3}) \|", DOCS.read_text(), flags=re.MULTILINE)
    return {(path, test_id) for path, test_id in rows}


def test_bandit_finds_nothing_high_and_every_other_finding_is_listed_with_its_reason() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bandit", "-q", "-r", *APPS, "-f", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = json.loads(result.stdout)
    assert not report["errors"], report["errors"]
    findings = [(r["filename"], r["test_id"], r["issue_severity"], r["line_number"]) for r in report["results"]]
    high = [f for f in findings if f[2] == "HIGH"]
    assert high == [], f"bandit HIGH findings: {high}"
    unlisted = sorted({(f[0], f[1]) for f in findings} - _accepted_bandit_findings())
    assert unlisted == [], f"bandit findings not listed (with a reason) in docs/security.md: {unlisted}"


# DEPENDENCY AUDIT
# ------------------------------------------------------------------------------
def _vulnerability_database_unreachable() -> str | None:
    """Why pip-audit's database (PyPI's JSON API, which carries each release's advisories) cannot be used."""
    import django

    url = f"https://pypi.org/pypi/django/{django.get_version()}/json"
    try:
        answer = requests.get(url, timeout=5)
    except requests.RequestException as exc:
        return f"{url} unreachable: {exc.__class__.__name__}"
    if answer.status_code != 200 or "vulnerabilities" not in answer.text:
        return f"{url} answered {answer.status_code} without advisories (an index mirror, not PyPI's JSON API)"
    return None


def test_no_pinned_dependency_has_a_known_vulnerability() -> None:
    reason = _vulnerability_database_unreachable()
    if reason is not None:
        pytest.skip(f"pip-audit skipped: its vulnerability database is not reachable from here ({reason})")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip_audit",
            "-r",
            "requirements.txt",
            "-r",
            "requirements-dev.txt",
            "--no-deps",
            "--disable-pip",
            "--progress-spinner",
            "off",
            "-f",
            "json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = json.loads(result.stdout)
    vulnerable = {d["name"]: [v["id"] for v in d["vulns"]] for d in report["dependencies"] if d.get("vulns")}
    unaudited = [d["name"] for d in report["dependencies"] if d.get("skip_reason")]
    assert vulnerable == {}, vulnerable
    assert unaudited == [], f"not audited: {unaudited}"


# CONSTANT-TIME COMPARISONS
# ------------------------------------------------------------------------------
SECRET_NAME = re.compile(r"secret|signature|digest|password|passwd|hmac|api_key|auth_token|bearer|credential", re.I)


def _names(node: ast.AST) -> list[str]:
    return [
        n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(node) if isinstance(n, ast.Name | ast.Attribute)
    ]


def _string_equalities_on_secrets(path: Path, root: Path = ROOT) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Compare) or not any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
            continue
        operands = [node.left, *node.comparators]
        # `x == None`, comparisons to numbers and `len(secret) == 0` are not comparisons of secret values.
        if any(isinstance(o, ast.Constant) and not isinstance(o.value, str | bytes) for o in operands):
            continue
        if any(isinstance(o, ast.Call) and getattr(o.func, "id", "") == "len" for o in operands):
            continue
        if any(SECRET_NAME.search(name) for o in operands for name in _names(o)):
            found.append(f"{path.relative_to(root)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_secrets_signatures_and_tokens_are_compared_in_constant_time_only() -> None:
    # Given every module of the apps
    sources = [p for app in APPS for p in (ROOT / app).rglob("*.py") if "migrations" not in p.parts]
    # Then no `==`/`!=` has a secret, signature, digest or password on either side
    offenders = [hit for path in sources for hit in _string_equalities_on_secrets(path)]
    assert offenders == [], "use hmac.compare_digest: " + "; ".join(offenders)
    # and the webhook and /metrics do use compare_digest
    assert "compare_digest" in (ROOT / "payments" / "gateways.py").read_text()
    assert "compare_digest" in (ROOT / "core" / "metrics.py").read_text()


def test_the_constant_time_gate_catches_a_plain_comparison(tmp_path: Path) -> None:
    sample = tmp_path / "webhook.py"
    sample.write_text(
        "def ok(signature: str, expected: str, n: int) -> bool:\n"
        "    return signature == expected or len(signature) == n or signature != None\n"
    )
    assert _string_equalities_on_secrets(sample, root=tmp_path) == ["webhook.py:2: signature == expected"]


# /metrics AND FLOWER REFUSE ANONYMOUS CALLERS
# ------------------------------------------------------------------------------
@pytest.mark.django_db
def test_metrics_refuse_anonymous_and_wrong_credentials(client: Any, settings: Any) -> None:
    settings.METRICS_TOKEN = "metrics-token-for-the-security-suite"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    answer = client.get("/metrics", HTTP_AUTHORIZATION="Bearer metrics-token-for-the-security-suite")
    assert answer.status_code == 200 and b"jobs_runs" in answer.content
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 403  # no credentials configured: off, not open


def test_flower_refuses_anonymous_requests() -> None:
    from tests.support.redis_server import _free_port

    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PYTEST")},
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DJANGO_READ_DOT_ENV": "false",
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "FLOWER_BASIC_AUTH": "ops:flower-pw-for-the-security-suite",
    }
    # When Flower starts as `make run` starts it (the Procfile's flower line, on a spare port)
    process = subprocess.Popen(
        [sys.executable, "manage.py", "celery_manager", "flower", "--address", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 30
        while True:
            try:
                anonymous = requests.get(url, timeout=2)
                break
            except requests.ConnectionError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "Flower did not start within 30 s"
                time.sleep(0.3)
        wrong = requests.get(url, auth=("ops", "guess"), timeout=5)
        right = requests.get(url, auth=("ops", "flower-pw-for-the-security-suite"), timeout=5)
        api = requests.get(url + "api/workers", timeout=5)
    finally:
        process.terminate()
        process.wait(timeout=10)
    # Then only the right password gets in, to the pages and to Flower's API
    assert anonymous.status_code == 401
    assert wrong.status_code == 401
    assert right.status_code == 200
    assert api.status_code == 401
