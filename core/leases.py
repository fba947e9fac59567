"""A lease per job key: at most one copy of a job runs at a time.

The holder renews the lease from a background thread while it works; a holder
whose worker died stops renewing, and the lease lapses after `ttl_seconds`.
"""

from __future__ import annotations

import logging
import threading

from core.redis import get_redis

logger = logging.getLogger(__name__)

# Compare-and-act in Lua, so a lease that lapsed and went to another holder is
# never renewed or released by the old one.
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_ACQUIRE = (
    "if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end "
    "if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('pexpire', KEYS[1], ARGV[2]) return 1 end return 0"
)
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class JobLease:
    def __init__(self, key: str, token: str, ttl_seconds: int) -> None:
        self.key = f"jobs:lease:{key}"
        self.token = token
        self.ttl_ms = ttl_seconds * 1000
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        # Atomically: take a free lease, or take back our own (the same task id redelivered
        # after its worker died).
        if get_redis().eval(_ACQUIRE, 1, self.key, self.token, self.ttl_ms):
            self._start_renewing()
            return True
        return False

    def holder(self) -> str | None:
        value = get_redis().get(self.key)
        return str(value) if value is not None else None

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        try:
            get_redis().eval(_RELEASE, 1, self.key, self.token)
        except Exception:  # the lease lapses on its own; a failed release must not fail the job
            logger.warning("could not release lease %s", self.key, exc_info=True)

    def _start_renewing(self) -> None:
        interval = max(self.ttl_ms / 3000, 0.5)

        def renew() -> None:
            while not self._stop.wait(interval):
                try:
                    if not get_redis().eval(_RENEW, 1, self.key, self.token, self.ttl_ms):
                        logger.error("lease %s was lost while running; another copy may start", self.key)
                        return
                except Exception:
                    logger.warning("could not renew lease %s", self.key, exc_info=True)

        self._thread = threading.Thread(target=renew, name=f"lease-{self.key}", daemon=True)
        self._thread.start()


RUN_ALIVE_SECONDS = 20


def run_alive_key(task_id: str) -> str:
    return f"jobs:alive:{task_id}"


class RunAlive:
    """A key that says a run's process is alive, renewed every few seconds while it runs.

    The pool child renews it from a thread; when the child (or its worker, which takes its
    children with it) dies, the key expires within RUN_ALIVE_SECONDS and the watchdog
    (core.services.watchdog) closes the run as `lost`.
    """

    def __init__(self, task_id: str, ttl_seconds: int = RUN_ALIVE_SECONDS) -> None:
        self.key = run_alive_key(task_id)
        self.ttl = ttl_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        try:
            get_redis().set(self.key, "1", ex=self.ttl)
        except Exception:  # Redis down: the run still runs; the watchdog cannot see it either
            logger.warning("could not mark run %s alive", self.key, exc_info=True)

        def renew() -> None:
            while not self._stop.wait(self.ttl / 4):
                try:
                    get_redis().set(self.key, "1", ex=self.ttl)
                except Exception:
                    logger.warning("could not renew %s", self.key, exc_info=True)

        self._thread = threading.Thread(target=renew, name=self.key, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        try:
            get_redis().delete(self.key)
        except Exception:
            logger.warning("could not clear %s", self.key, exc_info=True)


def lease_release_for(job_key: str, task_id: str) -> bool:
    """Release a job's overlap lease if `task_id` holds it (its holder died)."""
    return bool(get_redis().eval(_RELEASE, 1, f"jobs:lease:{job_key}", task_id))
