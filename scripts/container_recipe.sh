#!/usr/bin/env bash
# The container image's recipe as a script: the Dockerfile runs its `deps` and `app` steps, and CI runs
# `check`, which goes through the whole recipe on this machine (no container engine needed):
#
#   scripts/container_recipe.sh deps VENV [EXTRAS]   dependencies only, from pyproject.toml at the lock's versions
#   scripts/container_recipe.sh app VENV             the project itself: a regular install (a wheel), no editable one
#   scripts/container_recipe.sh check                fresh venv from the lock, a non-root user (when run as root),
#                                                    migrate, `concord serve --workers 2` and one `concord worker`,
#                                                    then the image's health check, /readyz and /metrics
#
# check uses PostgreSQL when CONCORD_RECIPE_DATABASE_ADMIN_URL names a server (a fresh database, dropped at
# the end), else SQLite with one server process.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3.11}"
PORT="${CONCORD_RECIPE_PORT:-18731}"

requirements_of() {  # the dependencies pyproject.toml lists for these extras, one per line
    "$PYTHON" - "$ROOT/pyproject.toml" "$1" <<'PY'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
wanted = [extra for extra in sys.argv[2].split(",") if extra]
print("\n".join(project["dependencies"] + [d for e in wanted for d in project["optional-dependencies"][e]]))
PY
}

install_deps() {  # VENV EXTRAS
    [ -x "$1/bin/python" ] || "$PYTHON" -m venv "$1"
    requirements_of "$2" > "$1/requirements.txt"
    "$1/bin/pip" install -q -c "$ROOT/constraints.txt" -r "$1/requirements.txt"
}

install_app() {  # VENV
    "$1/bin/pip" install -q --no-deps -c "$ROOT/constraints.txt" "$ROOT"
}

healthcheck() {  # the Dockerfile's HEALTHCHECK: /healthz answers 200
    "$1/bin/python" -c "import sys, urllib.request; sys.exit(urllib.request.urlopen(sys.argv[1], timeout=3).status != 200)" "$2/healthz"
}

SERVICE_USER=""

choose_service_user() {  # as root: an unprivileged user, as in the image, with a Python that user may run
    [ "$(id -u)" = 0 ] || return 0
    id concord-recipe >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin concord-recipe
    local candidate
    for candidate in "$(command -v "$PYTHON")" /usr/bin/python3.11 /usr/local/bin/python3.11; do
        if [ -x "$candidate" ] && runuser -u concord-recipe -- "$candidate" -c "import venv" 2>/dev/null; then
            PYTHON="$candidate" SERVICE_USER=concord-recipe
            return 0
        fi
    done
    echo "recipe: no Python 3.11 that an unprivileged user may run (pyenv under /root is closed): running as root" >&2
}

start_service() {  # LOG COMMAND...: in the background, in its own process group (stopped as a whole)
    local log=$1
    shift
    if [ -n "$SERVICE_USER" ]; then
        setsid runuser -u "$SERVICE_USER" -- env "${SERVICE_ENV[@]}" "$@" 2> "$log" &
    else
        setsid env "${SERVICE_ENV[@]}" "$@" 2> "$log" &
    fi
    pids+=($!)
}

stop_services() {  # SIGTERM to each group, SIGKILL to what is left after 30 s
    local pid waited=0
    for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        while kill -0 -- "-$pid" 2>/dev/null && [ "$waited" -lt 60 ]; do sleep 0.5; waited=$((waited + 1)); done
        kill -KILL -- "-$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

as_service_user() {
    if [ -n "$SERVICE_USER" ]; then
        runuser -u "$SERVICE_USER" -- env "${SERVICE_ENV[@]}" "$@"
    else
        env "${SERVICE_ENV[@]}" "$@"
    fi
}

database_admin() {  # VENV SQL: run one statement on the admin database
    "$1/bin/python" - "$CONCORD_RECIPE_DATABASE_ADMIN_URL" "$2" <<'PY'
import asyncio, sys
import asyncpg
async def main(url: str, sql: str) -> None:
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    await connection.execute(sql)
    await connection.close()
asyncio.run(main(sys.argv[1], sys.argv[2]))
PY
}

check() {
    # Globals, not locals: the EXIT trap runs after this function has returned.
    work=$(mktemp -d /tmp/concord-recipe.XXXX)
    chmod 755 "$work"
    venv="$work/venv" data="$work/data" url="" workers=1 database="" started=$SECONDS pids=()
    cleanup() {
        stop_services
        [ -n "$database" ] && database_admin "$venv" "DROP DATABASE IF EXISTS \"$database\" WITH (FORCE)" || true
        rm -rf "$work"
    }
    trap cleanup EXIT
    trap 'exit 143' TERM INT

    choose_service_user
    echo "recipe: dependencies from the lock into a fresh venv ($("$PYTHON" --version))"
    install_deps "$venv" worker
    echo "recipe: the project, a regular install"
    install_app "$venv"
    mkdir -p "$data"
    [ -z "$SERVICE_USER" ] || chown "$SERVICE_USER" "$data"
    if [ -n "${CONCORD_RECIPE_DATABASE_ADMIN_URL:-}" ]; then
        database="concord_recipe_$RANDOM$RANDOM"
        database_admin "$venv" "CREATE DATABASE \"$database\""
        url="${CONCORD_RECIPE_DATABASE_ADMIN_URL%/*}/$database"
        workers=2
    fi
    SERVICE_ENV=(HOME="$data" CONCORD_DATA_DIR="$data" CONCORD_DATABASE_URL="$url" CONCORD_LOG_FORMAT=json PYTHONDONTWRITEBYTECODE=1)
    cd "$work"  # not the source tree: the installed package must find its templates and migrations itself

    echo "recipe: migrate (as $(as_service_user id -un))"
    as_service_user "$venv/bin/concord" migrate
    start_service "$work/serve.log" "$venv/bin/concord" serve --host 127.0.0.1 --port "$PORT" --workers "$workers"
    start_service "$work/worker.log" "$venv/bin/concord" worker --name recipe-worker --poll-interval 0.5

    local base="http://127.0.0.1:$PORT" tries=0
    until healthcheck "$venv" "$base" 2>/dev/null; do
        tries=$((tries + 1))
        [ "$tries" -lt 120 ] || { echo "recipe: /healthz never answered" >&2; tail -20 "$work/serve.log" >&2; exit 1; }
        sleep 0.5
    done
    "$venv/bin/python" - "$base" <<'PY'
import json, sys, time, urllib.request
base = sys.argv[1]
ready = json.load(urllib.request.urlopen(f"{base}/readyz", timeout=5))
assert ready["status"] == "ready", ready
for _ in range(60):  # the worker's first heartbeat
    metrics = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
    if "concord_workers_alive 1.0" in metrics:
        break
    time.sleep(0.5)
assert "concord_workers_alive 1.0" in metrics, "the worker's heartbeat did not reach /metrics"
assert "concord_database_up 1.0" in metrics
page = urllib.request.urlopen(f"{base}/login", timeout=5).read().decode()
assert "<form" in page, "the login page did not render (templates missing?)"
print(f"recipe: healthz, readyz ({ready['revision']}), metrics (worker alive) and the login page answer")
PY
    grep -q '"logger": "concord.request"' "$work/serve.log" || { echo "recipe: no JSON request log line" >&2; exit 1; }
    echo "recipe: passed in $((SECONDS - started)) s ($( [ -n "$url" ] && echo "PostgreSQL, 2 server processes" || echo SQLite))"
}

case "${1:-}" in
    deps) install_deps "$2" "${3:-worker}" ;;
    app) install_app "$2" ;;
    check) check ;;
    *) echo "usage: $0 deps VENV [EXTRAS] | app VENV | check" >&2; exit 2 ;;
esac
