#!/usr/bin/env bash
# `make compose-check`: build the image and walk a user's path through the compose stack, for
# real, on the CPU: health, an API key, an upload, a job to the end, /predict, a worker restart
# in the middle of a job, `down` then `up` keeping everything, and `down -v`.
#
# Needs Docker Engine (started here as root if none answers) with Compose 2.24 or newer.
# What the build machine differs in comes from the environment, never from this file:
#   CLIPFT_CHECK_BASE_IMAGE  image with Python 3.11 and venv; unset: clipft-base:bookworm, made
#                            here with debootstrap from the host's Debian mirror if missing
#   TORCH_INDEX_URL          where torch comes from; unset: pip's index on this host (PyPI's
#                            torch 2.14.1 is the CUDA 13.0 build, which also runs on a CPU)
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_TRUSTED_HOST   passed on to the build if set
# Each step prints its time; everything it started is stopped when it ends, however it ends.
set -euo pipefail

cd "$(dirname "$0")/.."
PROJECT=clipft-check
BASE_IMAGE=${CLIPFT_CHECK_BASE_IMAGE:-clipft-base:bookworm}
WORK=$(mktemp -d)
STARTED_DOCKERD=
CHECK_START=$(date +%s)
STEP_START=$CHECK_START

step() {
    local now
    now=$(date +%s)
    printf '[%4ds] (%3ds) %s\n' "$((now - CHECK_START))" "$((now - STEP_START))" "$*"
    STEP_START=$now
}

fail() {
    echo "FAILED: $*" >&2
    compose ps -a >&2 || true
    compose logs --tail 40 >&2 || true
    exit 1
}

compose() {
    docker compose -p "$PROJECT" -f docker-compose.yml -f docker-compose.cpu.yml \
        -f "$WORK/check.yml" "$@"
}

cleanup() {
    local status=$?
    trap - EXIT
    if docker info > /dev/null 2>&1 && [ -f "$WORK/check.yml" ]; then
        compose down -v --remove-orphans > /dev/null 2>&1 || true
    fi
    if [ -n "$STARTED_DOCKERD" ]; then
        kill "$STARTED_DOCKERD" 2> /dev/null || true
        wait "$STARTED_DOCKERD" 2> /dev/null || true
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap "exit 143" INT TERM

# --- the engine -----------------------------------------------------------------------------

if ! docker info > /dev/null 2>&1; then
    command -v dockerd > /dev/null || fail "no Docker engine answers and dockerd is not installed"
    dockerd > "$WORK/dockerd.log" 2>&1 &
    STARTED_DOCKERD=$!
    for _ in $(seq 60); do docker info > /dev/null 2>&1 && break; sleep 1; done
    docker info > /dev/null 2>&1 || fail "dockerd did not start: $(tail -5 "$WORK/dockerd.log")"
    step "started dockerd (pid $STARTED_DOCKERD)"
fi
docker compose version > /dev/null || fail "the Compose v2 plugin is missing (docker compose)"
step "engine $(docker version --format '{{.Server.Version}}'), $(docker compose version --short)"

# --- the base image -------------------------------------------------------------------------

if ! docker image inspect "$BASE_IMAGE" > /dev/null 2>&1; then
    [ "$BASE_IMAGE" = clipft-base:bookworm ] || fail "no image $BASE_IMAGE"
    mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p; s/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\) .*/\2/p' \
        /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2> /dev/null | grep -v security | head -1 \
        || true)  # sed exits 2 when one of the files is absent (Debian 12 has only *.sources)
    [ -n "$mirror" ] || fail "no Debian mirror in /etc/apt/sources.list*"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$WORK/rootfs" "$mirror" > "$WORK/debootstrap.log" 2>&1 \
        || fail "debootstrap: $(tail -5 "$WORK/debootstrap.log")"
    changes=()
    # The host's CA bundle, with any TLS-inspecting proxy's certificate the host trusts; and
    # pip told to use it (the pip of Debian 12's venv reads only its own bundle otherwise).
    host_cert=${PIP_CERT:-$(pip config get global.cert 2> /dev/null || true)}
    if [ -n "$host_cert" ] && [ -f "$host_cert" ]; then
        cp "$host_cert" "$WORK/rootfs/etc/ssl/certs/ca-certificates.crt"
        changes=(--change "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt")
    fi
    rm -rf "$WORK"/rootfs/var/cache/apt/archives/*.deb "$WORK"/rootfs/var/lib/apt/lists/*
    tar -C "$WORK/rootfs" -c . | docker import "${changes[@]}" - "$BASE_IMAGE" > /dev/null
    rm -rf "$WORK/rootfs"
    step "made $BASE_IMAGE with debootstrap from the host's Debian mirror"
fi

# --- the check's own settings ---------------------------------------------------------------

# Without Docker Hub, PostgreSQL and Redis are stand-ins built from the same base image from
# Debian's packages (deploy/check/); the compose file's commands and health checks run as is.
# No setting is overridden: a stopping worker puts its job back in the queue itself, so the
# restart step needs no short heartbeat timeout (the default, 600 s, would fail it).
stand_ins=
for service in postgres:16 redis:7; do
    name=${service%%:*}
    if ! docker image inspect "$service" > /dev/null 2>&1 && ! docker pull -q "$service" > /dev/null 2>&1; then
        stand_ins+="
  $name:
    image: clipft-check-$name
    build:
      context: deploy/check
      dockerfile: $name.Dockerfile"
        step "no $service from a registry: a stand-in from Debian's $name (deploy/check/)"
    fi
done
if [ -n "$stand_ins" ]; then
    printf 'services:%s\n' "$stand_ins" > "$WORK/check.yml"
else
    echo 'services: {}' > "$WORK/check.yml"
fi

# --- build ----------------------------------------------------------------------------------

torch_index=${TORCH_INDEX_URL:-${PIP_INDEX_URL:-$(pip config get global.index-url 2> /dev/null || echo https://pypi.org/simple)}}
build_args=(--build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "TORCH_INDEX_URL=$torch_index")
for name in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST; do
    [ -n "${!name:-}" ] && build_args+=(--build-arg "$name=${!name}")
done
compose build "${build_args[@]}" > "$WORK/build.log" 2>&1 \
    || { tail -30 "$WORK/build.log"; fail "docker compose build"; }
size=$(docker image inspect clipft:latest --format '{{.Size}}')
step "built clipft:latest from $BASE_IMAGE: $((size / 1000000)) MB"

# --- up -------------------------------------------------------------------------------------

wait_healthy() {
    local deadline=$(($(date +%s) + $2)) container
    while [ "$(date +%s)" -lt "$deadline" ]; do
        container=$(compose ps -q "$1")
        if [ -n "$container" ] && [ "$(docker inspect -f '{{.State.Health.Status}}' "$container")" = healthy ]; then
            return 0
        fi
        sleep 1
    done
    fail "$1 not healthy within $2 s"
}

compose up -d > "$WORK/up.log" 2>&1 || { cat "$WORK/up.log"; fail "docker compose up"; }
wait_healthy api 240
step "api healthy"
wait_healthy worker 240
step "worker healthy"
migration=$(compose exec -T postgres psql -U clipft -d clipft -tAc 'select version_num from alembic_version')
[ -n "$migration" ] || fail "no migration applied"
step "migrations applied by the api: $migration"
docker stats --no-stream --format '{{.Name}}: {{.MemUsage}}' \
    "$(compose ps -q api)" "$(compose ps -q worker)"

# --- a user's path --------------------------------------------------------------------------

URL=http://localhost:8000
curl -fsS "$URL/health" | grep -q '"database":"ok"' || curl -fsS "$URL/health" | grep -q '"database": "ok"' \
    || fail "/health: $(curl -sS "$URL/health")"
step "GET /health: $(curl -sS "$URL/health")"

KEY=$(compose exec -T api clipft keys create --name check --tenant check | grep -o 'clipft_[A-Za-z0-9_-]*' | head -1)
[ -n "$KEY" ] || fail "clipft keys create printed no key"
AUTH=(-H "Authorization: Bearer $KEY")
step "clipft keys create in the api container"

# A small classification zip, made by the image's own synthetic data.
compose exec -T api python -c \
    'import sys; from app.ml.synthetic import shapes_classification_zip; sys.stdout.buffer.write(shapes_classification_zip(per_class=12, seed=0))' \
    > "$WORK/shapes.zip"
DATASET_ID=$(curl -fsS "${AUTH[@]}" -F "file=@$WORK/shapes.zip" -F name=check "$URL/datasets" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
step "uploaded dataset $DATASET_ID"

job_field() {
    curl -fsS "${AUTH[@]}" "$URL/jobs/$1" | python3 -c "import json, sys; print(json.load(sys.stdin)$2)"
}

wait_job() {  # job, status wanted, seconds
    local deadline=$(($(date +%s) + $3)) status
    while [ "$(date +%s)" -lt "$deadline" ]; do
        status=$(job_field "$1" '["status"]')
        [ "$status" = "$2" ] && return 0
        case $status in failed | cancelled) fail "job $1 $status: $(curl -sS "${AUTH[@]}" "$URL/jobs/$1")" ;; esac
        sleep 1
    done
    fail "job $1 not $2 within $3 s (it is $status)"
}

create_job() {  # epochs
    curl -fsS "${AUTH[@]}" -H 'Content-Type: application/json' "$URL/jobs" -d '{"dataset_id": "'"$DATASET_ID"'", "base_model": "tiny-clip", "name": "check", "hyperparameters": {"epochs": '"$1"', "batch_size": 8}}' \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])'
}

JOB_ID=$(create_job 3)
job_created=$(date +%s)
wait_job "$JOB_ID" running 120
step "job $JOB_ID running"
wait_job "$JOB_ID" succeeded 600
MODEL_ID=$(job_field "$JOB_ID" '["model_id"]')
seconds_per_epoch=$((($(date +%s) - job_created + 2) / 3))
step "job succeeded: model $MODEL_ID"

image=$(compose exec -T api python -c \
    'import base64, io; from app.ml.synthetic import photo_like; b = io.BytesIO(); photo_like(96, 64, seed=1).save(b, format="PNG"); print(base64.b64encode(b.getvalue()).decode())')
curl -fsS "${AUTH[@]}" -H 'Content-Type: application/json' "$URL/predict" \
    -d '{"model_id": "'"$MODEL_ID"'", "images": ["'"$image"'"], "top_k": 2}' > "$WORK/predict.json" \
    || fail "/predict"
step "POST /predict: $(head -c 200 "$WORK/predict.json")"

# --- the worker restarted in the middle of a job --------------------------------------------

# About 90 s of training at the first job's pace, so that it is still running when the
# restarted worker is back, whatever the machine's speed.
LONG_JOB_ID=$(create_job $((90 / (seconds_per_epoch > 0 ? seconds_per_epoch : 1) + 4)))
wait_job "$LONG_JOB_ID" running 120
deadline=$(($(date +%s) + 300))
until [ "$(job_field "$LONG_JOB_ID" '["progress"]["epoch"]')" -ge 2 ]; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "the long job made no progress"
    sleep 1
done
attempt=$(job_field "$LONG_JOB_ID" '["attempt"]')
step "job $LONG_JOB_ID running, epoch $(job_field "$LONG_JOB_ID" '["progress"]["epoch"]'), attempt $attempt"
# The stopping worker stops the run at its next step, puts the job back in the queue without
# counting the attempt, and exits well inside stop_grace_period (30 s) instead of being killed.
restart_began=$(date +%s)
compose restart worker > /dev/null 2>&1
restarted=$(date +%s)
[ $((restarted - restart_began)) -lt 30 ] \
    || fail "the worker took $((restarted - restart_began)) s to stop: killed at the end of its grace"
curl -fsS "${AUTH[@]}" "$URL/jobs/$LONG_JOB_ID/events" | grep -q 'queued again: its worker is shutting down' \
    || fail "the stopping worker did not put the job back in the queue"
step "docker compose restart worker: the job is $(job_field "$LONG_JOB_ID" '["status"]'), attempt $(job_field "$LONG_JOB_ID" '["attempt"]')"
deadline=$(($(date +%s) + 300))
until [ "$(job_field "$LONG_JOB_ID" '["status"]')" = running ]; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "the job was not running again within 300 s"
    sleep 1
done
[ "$(job_field "$LONG_JOB_ID" '["attempt"]')" = "$attempt" ] \
    || fail "the restart counted an attempt: $attempt, now $(job_field "$LONG_JOB_ID" '["attempt"]')"
step "job running again $(($(date +%s) - restarted)) s after the restart returned, $(($(date +%s) - restart_began)) s after it began (attempt $attempt)"
wait_job "$LONG_JOB_ID" succeeded 900
[ "$(job_field "$LONG_JOB_ID" '["attempt"]')" = "$attempt" ] || fail "the job ended on another attempt"
resumed=$(curl -fsS "${AUTH[@]}" "$URL/jobs/$LONG_JOB_ID/events" | grep -o 'resuming from [^"]*' | tail -1)
[ -n "$resumed" ] || fail "the job did not resume from a checkpoint"
step "job succeeded after the restart, attempt $attempt, $resumed"

# --- down, then up: every dataset, job and model is still there -----------------------------

compose down > /dev/null 2>&1
step "docker compose down"
compose up -d > /dev/null 2>&1
wait_healthy api 240
wait_healthy worker 240
step "docker compose up: healthy again"
curl -fsS "${AUTH[@]}" "$URL/datasets/$DATASET_ID" > /dev/null || fail "the dataset is gone"
for job in "$JOB_ID" "$LONG_JOB_ID"; do
    [ "$(job_field "$job" '["status"]')" = succeeded ] || fail "job $job lost its state"
done
for model in "$MODEL_ID" "$(job_field "$LONG_JOB_ID" '["model_id"]')"; do
    curl -fsS "${AUTH[@]}" "$URL/models/$model" > /dev/null || fail "model $model is gone"
done
curl -fsS "${AUTH[@]}" -H 'Content-Type: application/json' "$URL/predict" \
    -d '{"model_id": "'"$MODEL_ID"'", "images": ["'"$image"'"], "top_k": 2}' > /dev/null \
    || fail "/predict after down and up"
step "the key, the dataset, both jobs and both models are still there; /predict answers"

compose down -v > /dev/null 2>&1
step "docker compose down -v"
echo "compose check passed in $(($(date +%s) - CHECK_START)) s"
