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
# the end), else SQLite with one server process. With a Python that has moto (CONCORD_RECIPE_S3_PYTHON, by
# default the checkout's .venv), it also starts moto's S3 server, gives the services CONCORD_STORAGE_URL
# and the AWS variables, the service and the worker each their own data dir, and checks that an uploaded
# image lands in the bucket.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3.11}"
PORT="${CONCORD_RECIPE_PORT:-18731}"
S3_PORT="${CONCORD_RECIPE_S3_PORT:-18732}"
S3_PYTHON="${CONCORD_RECIPE_S3_PYTHON:-$ROOT/.venv/bin/python}"

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

start_s3() {  # moto's S3 server and a bucket; sets S3_ENV (the services' storage variables)
    S3_ENV=()
    "$S3_PYTHON" -c "import moto.server, flask" 2>/dev/null || { echo "recipe: no moto at $S3_PYTHON: local storage"; return 0; }
    setsid "$S3_PYTHON" -m moto.server -H 127.0.0.1 -p "$S3_PORT" 2> "$work/s3.log" &
    pids+=($!)
    local endpoint="http://127.0.0.1:$S3_PORT" tries=0
    until "$S3_PYTHON" -c "import sys, urllib.request; urllib.request.urlopen(urllib.request.Request(sys.argv[1] + '/concord', method='PUT'), timeout=3)" "$endpoint" 2>/dev/null; do
        tries=$((tries + 1))
        [ "$tries" -lt 60 ] || { echo "recipe: moto's S3 server never answered" >&2; tail -20 "$work/s3.log" >&2; exit 1; }
        sleep 0.5
    done
    S3_ENV=(CONCORD_STORAGE_URL=s3://concord/recipe AWS_ENDPOINT_URL="$endpoint" AWS_REGION=us-east-1
        AWS_ACCESS_KEY_ID=recipe AWS_SECRET_ACCESS_KEY=recipe-secret)
    echo "recipe: storage in the bucket s3://concord/recipe (moto at $endpoint)"
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
    start_s3
    local worker_data="$data"
    if [ "${#S3_ENV[@]}" -gt 0 ] && [ -n "$url" ]; then  # a shared bucket and database: nothing else shared
        worker_data="$work/worker-data"
        mkdir -p "$worker_data"
        [ -z "$SERVICE_USER" ] || chown "$SERVICE_USER" "$worker_data"
    fi
    SERVICE_ENV=(HOME="$data" CONCORD_DATA_DIR="$data" CONCORD_DATABASE_URL="$url" CONCORD_LOG_FORMAT=json
        PYTHONDONTWRITEBYTECODE=1 "${S3_ENV[@]}")
    cd "$work"  # not the source tree: the installed package must find its templates and migrations itself

    echo "recipe: migrate (as $(as_service_user id -un))"
    as_service_user "$venv/bin/concord" migrate
    start_service "$work/serve.log" "$venv/bin/concord" serve --host 127.0.0.1 --port "$PORT" --workers "$workers"
    SERVICE_ENV+=(CONCORD_DATA_DIR="$worker_data")
    start_service "$work/worker.log" "$venv/bin/concord" worker --name recipe-worker --poll-interval 0.5
    SERVICE_ENV+=(CONCORD_DATA_DIR="$data")

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
    [ "${#S3_ENV[@]}" -eq 0 ] || check_upload_lands_in_bucket "$base"
    echo "recipe: passed in $((SECONDS - started)) s ($( [ -n "$url" ] && echo "PostgreSQL, 2 server processes" || echo SQLite))"
}

check_upload_lands_in_bucket() {  # BASE: an admin uploads a PNG through the API; the bucket holds it
    as_service_user "$venv/bin/concord" user add recipe-admin --role admin > /dev/null
    local token
    token=$(as_service_user "$venv/bin/concord" user token recipe-admin)
    "$venv/bin/python" - "$1" "$token" "http://127.0.0.1:$S3_PORT/concord" <<'PY'
import io, json, sys, urllib.request, uuid
import numpy as np
from PIL import Image
base, token, bucket = sys.argv[1:]
def call(method, path, body=None, content_type="application/json"):
    request = urllib.request.Request(f"{base}/api/v1{path}", data=body, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Content-Type", content_type)
    return json.load(urllib.request.urlopen(request, timeout=30))
study = call("POST", "/studies", json.dumps({"name": "recipe"}).encode())
labels = [{"name": "cell"}]
task = call("POST", f"/studies/{study['id']}/tasks", json.dumps({"name": "t", "kind": "classify", "labels": labels}).encode())
png = io.BytesIO()
Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(png, "PNG")
boundary = uuid.uuid4().hex
body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.png\"\r\n"
        f"Content-Type: image/png\r\n\r\n").encode() + png.getvalue() + f"\r\n--{boundary}--\r\n".encode()
image = call("POST", f"/tasks/{task['id']}/images", body, f"multipart/form-data; boundary={boundary}")[0]
listing = urllib.request.urlopen(f"{bucket}?list-type=2&prefix=recipe/images/", timeout=10).read().decode()
assert "<Key>recipe/images/" in listing, listing
tile = urllib.request.Request(f"{base}/api/v1/images/{image['id']}/tiles/0/0/0")
tile.add_header("Authorization", f"Bearer {token}")
assert urllib.request.urlopen(tile, timeout=30).read()[:2] == b"\xff\xd8"
print("recipe: an uploaded image is in the bucket and its tiles are served")
PY
}

case "${1:-}" in
    deps) install_deps "$2" "${3:-worker}" ;;
    app) install_app "$2" ;;
    check) check ;;
    *) echo "usage: $0 deps VENV [EXTRAS] | app VENV | check" >&2; exit 2 ;;
esac
