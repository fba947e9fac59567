#!/usr/bin/env bash
# Make sure the services a command needs are up: start them when they are installed
# but not running, otherwise stop with a message that says how to get them.
#   scripts/ensure_services.sh redis            (make run)
#   scripts/ensure_services.sh redis postgres   (make test)
set -euo pipefail

redis_up() { python3 - "$1" <<'PY'
import socket, sys
from urllib.parse import urlparse
u = urlparse(sys.argv[1]); s = socket.socket(); s.settimeout(1)
try:
    s.connect((u.hostname or "127.0.0.1", u.port or 6379)); s.sendall(b"PING\r\n")
    sys.exit(0 if s.recv(16).startswith(b"+PONG") else 1)
except OSError:
    sys.exit(1)
PY
}

ensure_redis() {
    local url="${CELERY_BROKER_URL:-redis://127.0.0.1:6379/0}"
    redis_up "$url" && return 0
    if command -v redis-server >/dev/null 2>&1; then
        echo "Redis is not answering at $url; starting redis-server ..."
        local port; port=$(python3 -c "from urllib.parse import urlparse; print(urlparse('$url').port or 6379)")
        mkdir -p .make
        redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
            --dir "$PWD/.make" --logfile "$PWD/.make/redis.log"
        for _ in $(seq 1 50); do redis_up "$url" && return 0; sleep 0.1; done
        echo "redis-server did not come up; see .make/redis.log" >&2; exit 1
    fi
    cat >&2 <<MSG
Redis is not reachable at $url and redis-server is not installed.
Install and start it, then run this again:
  Debian/Ubuntu: sudo apt-get install redis-server
  macOS:         brew install redis && brew services start redis
  Docker:        docker run -d -p 6379:6379 redis:7
Or point CELERY_BROKER_URL and REDIS_URL at a Redis you have.
MSG
    exit 1
}

tcp_up() { python3 - "$1" <<'PY'
import socket, sys
from urllib.parse import urlparse
u = urlparse(sys.argv[1])
try:
    socket.create_connection((u.hostname or "127.0.0.1", u.port or 5432), timeout=1).close()
except OSError:
    sys.exit(1)
PY
}

ensure_postgres() {
    local url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/marketplace}"
    tcp_up "$url" && return 0
    local host; host=$(python3 -c "from urllib.parse import urlparse; print(urlparse('$url').hostname or '127.0.0.1')")
    if [[ "$host" =~ ^(127\.0\.0\.1|localhost)$ ]] && command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
        local version; version=$(ls /etc/postgresql | sort -V | tail -1)
        echo "PostgreSQL is not answering on 127.0.0.1:5432; starting cluster $version/main ..."
        pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
        for _ in $(seq 1 50); do tcp_up "$url" && return 0; sleep 0.2; done
        echo "PostgreSQL did not come up: check 'pg_lsclusters'." >&2; exit 1
    fi
    cat >&2 <<'MSG'
PostgreSQL is not reachable (TEST_DATABASE_URL) and no local cluster is installed.
The test suite needs it (row locks, concurrency tests). Install and start it:
  Debian/Ubuntu: sudo apt-get install postgresql && sudo pg_ctlcluster 15 main start
  macOS:         brew install postgresql@15 && brew services start postgresql@15
  Docker:        docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:15
Or point make at one you have (a user with CREATEDB; the password in the URL):
  make test TEST_DATABASE_URL=postgres://USER:PASSWORD@HOST:5432/marketplace
MSG
    exit 1
}

for service in "$@"; do
    case "$service" in
        redis) ensure_redis ;;
        postgres) ensure_postgres ;;
        *) echo "unknown service $service" >&2; exit 2 ;;
    esac
done
