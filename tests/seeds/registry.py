"""Every fenced block of the five seed guides, and the test that runs it or checks what it states.

One row per block: (seed, index, digest of its text, tests, reason). `test_registry.py` fails
when a block has no row, a digest no longer matches (the guide changed: re-read the block and
its test), or a row names a test that does not exist. Translations are in translate.py.
"""

from __future__ import annotations

from typing import NamedTuple


class Row(NamedTuple):
    seed: str
    index: int
    digest: str
    tests: tuple[str, ...]
    reason: str


_W = "tests/seeds/test_workers.py::"
_P = "tests/seeds/test_processes.py::"
_S = "tests/seeds/test_statements.py::"
W000 = _W + "test_seed_000_payments_worker_and_the_manual_triggers_from_a_python_heredoc"
BARE = _W + "test_seed_001_and_003_calls_on_a_bare_worker_and_the_inspect_commands"
SOLO = _W + "test_seed_004_solo_worker_runs_the_expiry_sweep_and_get_prints_the_count"
VARIANTS = _P + "test_every_worker_variant_of_the_guides_starts_with_its_pool_queues_and_log"
BEAT = _P + "test_beat_as_the_guides_start_it_sends_the_database_schedules"
WORKER_BEAT = _P + "test_a_worker_with_embedded_beat_runs_the_schedules"
FLOWER = _P + "test_flower_as_the_guides_start_it_asks_for_the_password_from_flower_basic_auth"
WEB = _P + "test_runserver_and_the_pricing_curls_answer_as_the_guides_show"
REDIS = _P + "test_redis_server_starts_and_redis_cli_ping_answers_pong"
PURGE = _P + "test_purge_asks_first_then_empties_the_queues"
NO_REDIS = _P + "test_a_worker_without_redis_says_it_cannot_connect"
PACKAGES = _S + "test_the_packages_the_guides_install_are_pinned_and_installed"
BROKER_ENV = _S + "test_the_broker_and_result_backend_come_from_the_environment_the_guides_export"
DRIVER_ENV = _S + "test_the_driver_timeout_and_time_zone_come_from_the_environment"
SEED3_ENV = _S + "test_seed_003s_environment_names_are_read"
CELERY_CONF = _S + "test_the_celery_settings_the_guides_show_are_ours"
SCHEDULES = _S + "test_the_guides_schedules_are_the_database_entries_after_setup"
MIGRATE = _S + "test_migrate_as_written_leaves_the_beat_tables_in_place"
EXAMPLES = _S + "test_the_guides_task_examples_define_working_tasks_on_our_app"
COMPOSE = _S + "test_the_compose_file_runs_workers_beat_and_flower_on_the_configured_database_and_redis"
PROCFILE = _S + "test_the_procfile_runs_web_workers_beat_and_flower"
NOT_EAGER = _S + "test_the_guides_eager_test_setting_is_not_ours"
SYSTEMD = "tests/core/test_systemd_units.py::test_systemd_analyze_verify_accepts_the_units"
DOT_ENV = "tests/core/test_run_script.py::test_dot_env_only_fills_in_what_is_not_exported"
ROUTES = "tests/core/test_settings.py::test_tasks_are_routed_to_their_domain_queue_by_name_prefix"
ESCROW_HTTP = "tests/payments/test_escrow_apis.py::test_the_full_flow_through_http_with_every_party_told_at_each_step"
EXPIRY_E2E = (
    "tests/e2e/test_logistics_expiry.py::"
    "test_an_unaccepted_offer_is_back_in_the_pool_within_the_bound_and_the_eic_user_is_pushed"
)
NO_ROOT = "needs root and the host's service manager; the machine's Redis already runs"

R = Row
ROWS: tuple[Row, ...] = (
    R("000", 0, "c9333a78aa", (REDIS,), "runs: redis-server on a free port (6379 is the machine's Redis)"),
    R("000", 1, "dd3321c631", (W000,), "runs: the payments worker (-Q payments) the heredocs below use"),
    R(
        "000",
        2,
        "b12a775234",
        (BEAT,),
        "runs: beat with django-celery-beat's DatabaseScheduler named; it skips our leader lease (one such beat only)",
    ),
    R("000", 3, "b2d5ad2966", (WEB,), "runs: runserver on a free port instead of 8000"),
    R("000", 4, "3530bba8e1", (W000,), "runs: the heredoc through bash; the scan cancels the expired orders"),
    R("000", 5, "8aad22b493", (W000,), "runs: REPLACE-UUID is a real expired order's id"),
    R(
        "000",
        6,
        "f99d7cd815",
        (W000,),
        "runs: SchedulerService as CelerySchedulerService; the ECB feed is a local server",
    ),
    R("000", 7, "7268dc1503", (W000,), "runs: setup_default_tasks() and get_task_status() print the entries"),
    R(
        "000",
        8,
        "13229d292e",
        (W000,),
        "runs, prints []: a bare interpreter's current_app is Celery's default app in any project; `celery -A config inspect registered` lists them",
    ),
    R("000", 9, "be8628d869", (W000,), "runs as written: one line per beat entry"),
    R(
        "000",
        10,
        "177b4920b8",
        (FLOWER,),
        "runs: Flower from requirements.txt (no pip); FLOWER_PORT for a free port; password from FLOWER_BASIC_AUTH",
    ),
    R("001", 0, "3805657e2e", (PACKAGES,), "not run: no network; the packages are pinned and installed"),
    R("001", 1, "9b433f85e4", (REDIS,), f"not run: {NO_ROOT}; redis-server is there and answers"),
    R("001", 2, "00efdb89f5", (REDIS,), "not run: macOS (Homebrew); redis-server is there and answers"),
    R("001", 3, "1aada416a8", (REDIS,), "not run: no Docker daemon here; a redis-server process stands in"),
    R("001", 4, "a803a9e112", (MIGRATE,), "runs through call_command on the migrated test database"),
    R(
        "001",
        5,
        "9bba06a5a9",
        (BROKER_ENV,),
        "statement: the exported names are the broker and result backend a new process uses",
    ),
    R(
        "001",
        6,
        "913485a5de",
        (DOT_ENV,),
        "statement: .env fills in what is not exported; the repository's own .env is not written by tests",
    ),
    R("001", 7, "011476928b", (BARE,), "runs: the bare worker consumes every queue and answers inspect"),
    R("001", 8, "7fad141887", (VARIANTS,), "runs: solo pool"),
    R("001", 9, "8fdd7b9984", (BEAT,), "runs: our default scheduler is the database one (core.beat.LeaderScheduler)"),
    R("001", 10, "f36c1e6d7c", (WORKER_BEAT,), "runs: embedded beat sends the database schedules"),
    R(
        "001",
        11,
        "ba5da5fb9c",
        (SYSTEMD,),
        "config excerpt: our units are deploy/systemd/ (worker per queue group), verified by systemd-analyze",
    ),
    R("001", 12, "15cbead92f", (SYSTEMD,), "config excerpt: deploy/systemd/marketplace-beat@.service"),
    R("001", 13, "1ba3c7e1c4", (BARE,), "runs: the immediate call runs the body here, .delay() on the worker"),
    R("001", 14, "36919a01a4", (BARE,), "runs: transaction 123 does not exist: the summary says not_found"),
    R("001", 15, "6de7666b94", (BARE,), "runs: user 456 does not exist: the summary says not_found"),
    R(
        "001",
        16,
        "09b783b574",
        (ESCROW_HTTP,),
        "example for writing a view: ours records the notice in the outbox (services never import tasks); creating tells the seller",
    ),
    R(
        "001",
        17,
        "73d0da380c",
        (EXAMPLES,),
        "example for writing a task: defined on our app; process_large_file is the reader's; our evidence task is tests/payments/test_escrow_evidence.py",
    ),
    R("001", 18, "a377d8620b", (W000,), "runs: task-id-here is the scan's task id; Status: SUCCESS and its summary"),
    R("001", 19, "3fc46f6c8c", (FLOWER,), "runs (without pip)"),
    R("001", 20, "7ac6310d63", (VARIANTS,), "runs: the logfile in a temporary folder (/var/log/celery needs root)"),
    R(
        "001",
        21,
        "089715df14",
        (NOT_EAGER,),
        "not run: our tests are pytest on real workers, not manage.py test with eager tasks",
    ),
    R("001", 22, "06bc8cc2f5", (REDIS, BARE), "runs: redis-cli ping, then the bare worker"),
    R(
        "001",
        23,
        "d559898bd8",
        (BARE,),
        "runs: the venv is .venv at the root (source venv/bin/activate has no such folder here)",
    ),
    R(
        "001",
        24,
        "cfb9918c4b",
        (CELERY_CONF,),
        "settings excerpt: CELERY_TASK_TIME_LIMIT is the name; ours is 30 min (DESIGN.md)",
    ),
    R("001", 25, "1eb65a212a", (BEAT,), "runs: a worker and beat side by side"),
    R("001", 26, "9147421863", (BARE,), "advice with `...` placeholders: the bare-worker test calls both ways"),
    R("001", 27, "c1eb1fe47f", (EXAMPLES,), "example: defined and applied on our app"),
    R("001", 28, "8a7802d34c", (EXAMPLES,), "example: the time_limit is kept on the task"),
    R(
        "001",
        29,
        "3993508a23",
        (ROUTES,),
        "example the project does not follow: routing is in task_routes, never on the task (DESIGN.md)",
    ),
    R("002", 0, "71df97f428", (PROCFILE,), "diagram: web, Redis broker, worker and beat are the Procfile's processes"),
    R("002", 1, "d4c08e94ef", (COMPOSE,), "not run: no Docker daemon here; docker-compose.yml is checked"),
    R("002", 2, "cee1cb9098", (VARIANTS, BEAT, FLOWER), "runs: each terminal's line"),
    R(
        "002",
        3,
        "e3ba0fae99",
        (VARIANTS, BEAT, FLOWER, BARE, PURGE),
        "runs as python manage.py celery_manager ...; flower gets a free --port",
    ),
    R(
        "002",
        4,
        "4a3a74b185",
        (WEB,),
        "runs with curl against runserver: 401 as written (staff only), 202 and 200 with -u",
    ),
    R("002", 5, "cdf862eddc", (WEB,), "runs: {task_id} is the queued recompute's id"),
    R(
        "002",
        6,
        "ed4e07faef",
        (CELERY_CONF,),
        "settings excerpt: limits and max tasks per child as shown; results in django-db and prefetch 1 (DESIGN.md)",
    ),
    R(
        "002",
        7,
        "d9aa5916bb",
        (SCHEDULES,),
        "config excerpt: our schedules are database rows; the hourly recompute is one",
    ),
    R("002", 8, "8bd0a51cdb", (BARE,), "runs: active, scheduled, registered, stats"),
    R("002", 9, "ca66fd150e", (EXAMPLES,), "example: defined on our app under its own name"),
    R("002", 10, "23e425d6f3", (EXAMPLES,), "runs eagerly: a task defined in a shell is unknown to every worker"),
    R(
        "002",
        11,
        "d7f1659748",
        (REDIS, VARIANTS),
        "runs: ping, the import check (prints <Celery config ...>), the debug worker",
    ),
    R("002", 12, "d8a5a56123", (BARE, PURGE), "runs: purge asks first (yes/NO) then empties the queues"),
    R(
        "002",
        13,
        "d90d9a97b0",
        (BEAT,),
        "runs the beat line; there is no celerybeat-schedule file to rm (database scheduler)",
    ),
    R("002", 14, "7bde954516", (SYSTEMD,), "config excerpt: our worker units"),
    R("002", 15, "1abe71e7a5", (SYSTEMD,), "config excerpt: our beat units"),
    R("002", 16, "060706c2d0", (SYSTEMD,), f"not run: {NO_ROOT}; our units are verified instead"),
    R("003", 0, "d82acd95a9", (BARE,), "runs: the bare worker"),
    R("003", 1, "ea432c1bc9", (VARIANTS,), "runs: each -Q line consumes only its queue"),
    R("003", 2, "2a54ecd645", (VARIANTS,), "runs: with its concurrency"),
    R("003", 3, "4de8d5b7b3", (BEAT,), "runs"),
    R("003", 4, "b332cfb769", (BEAT,), "runs: the same line as seed 000's named scheduler"),
    R("003", 5, "be2922ffe0", (BEAT,), "runs; it is not file-based here: our default scheduler is the database one"),
    R("003", 6, "1ba0aeb30f", (WORKER_BEAT,), "runs (the same line as seed 001 block 10)"),
    R("003", 7, "ad3f1fa516", (COMPOSE,), "config excerpt: docker-compose.yml has the workers, beat and Flower"),
    R("003", 8, "958db33b40", (COMPOSE,), "not run: no Docker daemon here"),
    R("003", 9, "cdd1391b5b", (PACKAGES,), "not run: flower is pinned and installed"),
    R("003", 10, "140bc2155b", (FLOWER,), "runs on a free port"),
    R("003", 11, "9f2eae4cc8", (BARE,), "runs as `events --dump`: the curses screen needs a terminal"),
    R("003", 12, "6d24bb1ec3", (BARE,), "runs: status, then get() returns the notification ids and statuses"),
    R("003", 13, "af8501892b", (REDIS,), "runs"),
    R("003", 14, "f79185e90b", (BARE,), "runs"),
    R("003", 15, "f28e7e4f67", (BARE,), "runs"),
    R("003", 16, "5c632003a8", (BARE,), "runs"),
    R(
        "003",
        17,
        "a579743082",
        (SEED3_ENV,),
        "env file: SENDGRID_FROM_EMAIL, TWILIO_PHONE_NUMBER and the providers are read; the keys are the hosted services'",
    ),
    R("003", 18, "a73253293a", (BARE,), "runs"),
    R("003", 19, "792e849d0c", (BARE,), "runs: the old cart is deleted, the subscriptions run recorded"),
    R("004", 0, "4928fe5fec", (PROCFILE,), "diagram: the Procfile's processes"),
    R(
        "004",
        1,
        "0ec3478e4b",
        (DRIVER_ENV, SCHEDULES, BROKER_ENV),
        "settings excerpt: env names, Asia/Kolkata through TIME_ZONE, the 60 s schedule",
    ),
    R("004", 2, "170b799626", (REDIS,), "not run: Docker, Windows, macOS, apt; redis-server is there and answers"),
    R("004", 3, "1ff9efd6bb", (PACKAGES,), "not run: no network; pinned and installed"),
    R(
        "004",
        4,
        "70e1d13261",
        (WEB,),
        "runs (PowerShell block, same command in bash); daphne is not ours (gunicorn in production)",
    ),
    R("004", 5, "cf46b26ec7", (SOLO,), "runs: the solo worker runs the sweep"),
    R("004", 6, "042768eb63", (BEAT,), "runs"),
    R("004", 7, "ad8f38edd5", (WORKER_BEAT,), "runs"),
    R("004", 8, "4fd8be4e76", (DRIVER_ENV,), "runs the Linux line's effect (no PowerShell here): the process sees 600"),
    R("004", 9, "1d8804d591", (DOT_ENV,), "env file: .env fills in what is not exported"),
    R("004", 10, "ccd34398c2", (EXPIRY_E2E,), "flow diagram: the e2e expiry test walks it"),
    R("004", 11, "e84d3d6c66", (BARE,), "runs"),
    R("004", 12, "9d2ff7543a", (BARE,), "runs"),
    R("004", 13, "b572c0118e", (SOLO,), "runs in this process's Django: prints {'expired_count': 5}"),
    R("004", 14, "29c958c359", (NO_REDIS,), "output shown: the worker logs Celery's 'Cannot connect to redis://...'"),
    R("004", 15, "682f3e3dd6", (REDIS,), "runs the ping; docker start: no Docker daemon"),
    R("004", 16, "be07885f70", (VARIANTS,), "runs"),
    R("004", 17, "097aea430b", (BEAT,), "runs the beat line; `del` is Windows and there is no schedule file"),
    R(
        "004",
        18,
        "c79132c6dc",
        (COMPOSE,),
        "not run: Render is a hosted service; the same layout is docker-compose.yml",
    ),
)
