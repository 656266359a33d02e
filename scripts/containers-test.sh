#!/usr/bin/env bash
# `make containers-test`: the container files as shipped, built and run with Podman
# (root, Debian 12, no image registry: the base image is built locally from Debian
# packages). Stages, each timed:
#   engine   apt: podman, runc, network plugins, mmdebstrap; the host settings Podman
#            needs on these machines; podman-compose 1.6.0 (PyPI) in a venv
#   base     python:3.11-slim-bookworm from Debian packages (mmdebstrap), ghcr.io/astral-sh/uv:0.5
#            from uv's PyPI wheel (skipped when both exist; REBUILD_BASE=1 forces it)
#   images   every `build:` service of compose.yaml (five Dockerfiles, from uv.lock) and
#            compose.moto.yaml's moto server
#   sandbox  the pool service of compose.yaml as shipped: healthy in strict mode,
#            `rlm-rs sandbox doctor` inside, real steps (tests/containers/pool_probe.py)
#   compose  the stack (compose.yaml + compose.moto.yaml, .env copied from .env.example),
#            `storage init`, a key, `rlm-rs demo` through the gateway to COMPLETED with
#            verified citations
# Then prints stage times, image sizes and the pool's doctor report, and tears everything
# down (also on failure). Works on a copy of the tree: never writes into it.
# Podman 4.3 cannot wait for `service_healthy` nor start a service whose dependencies it
# did not start itself, so services are started in compose.yaml's dependency order with
# `--no-deps` and their health checks are polled here (no systemd runs them).
set -euo pipefail
cd "$(dirname "$0")/.."
PROJECT=${PROJECT:-rlmci}
OUT=${OUT:-$(mktemp -d /tmp/rlm-containers-test.XXXXXX)}
WORK=""                                    # the copy of the tree, made after the engine
mkdir -p "$OUT"
TOOLS=${TOOLS:-/opt/ci-tools}             # venv with podman-compose
BASE_TAR=${BASE_TAR:-/var/tmp/debian-bookworm-py311.tar}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
ENGINE_PACKAGES=(podman runc crun conmon catatonit containernetworking-plugins
  golang-github-containernetworking-plugin-dnsname iptables slirp4netns uidmap fuse-overlayfs
  mmdebstrap python3-venv ca-certificates curl git)
BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm
UV_IMAGE=ghcr.io/astral-sh/uv:0.5

T0=$(date +%s)
STAGE_TIMES=()
log() { echo "[containers-test $(( $(date +%s) - T0 ))s] $*"; }
die() { log "FAILED: $*"; exit 1; }
stage() {  # name command...: run one stage, record its time
  local name=$1 start; shift; start=$(date +%s)
  log "stage $name"
  "$@"
  STAGE_TIMES+=("$name $(( $(date +%s) - start ))s")
}
quiet() {  # label command...: output to $OUT/label.log, shown (tail) on failure
  local label=$1; shift
  if ! "$@" > "$OUT/$label.log" 2>&1; then
    tail -30 "$OUT/$label.log"; die "$label (full log: $OUT/$label.log)"
  fi
}

[ "$(id -u)" = 0 ] || die "needs root (Podman as root, apt for the engine)"
command -v apt-get > /dev/null || die "needs a Debian machine with apt-get"

# ---------------------------------------------------------------------------- engine
engine() {
  quiet apt-install ./scripts/apt-install.sh "${ENGINE_PACKAGES[@]}"
  # Two host settings without which no container starts on these VMs: no CAP_SYS_RESOURCE
  # (podman's default rlimits fail: "setrlimit RLIMIT_NOFILE: Operation not permitted"), and
  # crun 1.8 refuses the hybrid cgroup layout (cgroup v1 + a cgroup2 mount): runc accepts it.
  local conf=/etc/containers/containers.conf
  if ! grep -q '^# rlm-rs containers-test' "$conf" 2>/dev/null; then
    [ -f "$conf" ] && cp -n "$conf" "$conf.orig"
    mkdir -p /etc/containers
    cat > "$conf" <<'EOF'
# rlm-rs containers-test (scripts/containers-test.sh): settings these VMs need
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
EOF
  fi
  # Debian's podman-compose 1.0.3 mangles override files and ${VAR:-} from .env.
  if ! "$TOOLS/bin/podman-compose" --version 2>/dev/null | grep -q '1\.6\.0'; then
    [ -x "$TOOLS/bin/pip" ] || quiet venv python3 -m venv "$TOOLS"
    quiet pip-podman-compose "$TOOLS/bin/pip" install -q podman-compose==1.6.0
  fi
  podman info --format 'podman {{.Version.Version}}, {{.Host.OCIRuntime.Name}}, cgroup {{.Host.CgroupsVersion}}, {{.Store.GraphDriverName}}'
}

# ---------------------------------------------------------------------------- base images
base() {
  if [ "${REBUILD_BASE:-0}" != 1 ] && podman image exists "$BASE_IMAGE" && podman image exists "$UV_IMAGE"; then
    log "base images present (REBUILD_BASE=1 rebuilds them)"; return
  fi
  # Debian 12 minbase + Debian's python3 (3.11, which requires-python accepts) from the
  # host's configured mirror. sandbox_image/Dockerfile copies /usr/local/bin/python3.11.
  local sources=/etc/apt/sources.list.d/debian.sources
  [ -f "$sources" ] || sources=/etc/apt/sources.list
  rm -f "$BASE_TAR"
  quiet mmdebstrap mmdebstrap --variant=minbase --include=python3,ca-certificates,netbase,tzdata \
    --customize-hook='for n in python3.11 python3 python; do ln -sf /usr/bin/python3.11 "$1/usr/local/bin/$n"; done' \
    --customize-hook='rm -rf "$1"/var/cache/apt/*.bin "$1"/usr/share/doc/* "$1"/usr/share/man/*' \
    bookworm "$BASE_TAR" "$sources"
  # One --change per ENV (`ENV A=1 B=2` in one --change becomes A="1 B=2"). SSL_CERT_FILE:
  # uv reads the system bundle (builds bind-mount the host's, never copy it).
  quiet import podman import --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    "$BASE_TAR" localhost/debian-py311:bookworm
  rm -f "$BASE_TAR"
  podman tag localhost/debian-py311:bookworm "$BASE_IMAGE"
  # The uv 0.5 binary from its PyPI wheel, FROM scratch.
  local uvd; uvd=$(mktemp -d)
  quiet uv-wheel "$TOOLS/bin/pip" download -q --no-deps --only-binary=:all: 'uv==0.5.*' -d "$uvd"
  (cd "$uvd" && python3 -m zipfile -e uv-*.whl x && cp x/uv-*.data/scripts/uv x/uv-*.data/scripts/uvx . \
     && chmod 755 uv uvx && printf 'FROM scratch\nCOPY uv uvx /\n' > Containerfile)
  quiet uv-image podman build --pull=never -t "$UV_IMAGE" "$uvd"
  rm -rf "$uvd"
}

# ---------------------------------------------------------------------------- images
# Every service compose builds: service, Dockerfile, and the tag built here
# (localhost/rlm-rs/<Dockerfile suffix or service>:dev, or the service's own `image:`).
compose_builds() {
  "$TOOLS/bin/python" - "$@" <<'EOF'
import sys, yaml
class Loader(yaml.SafeLoader):  # compose's merge tags (!override, !reset): keep the value
    pass
def tagged(loader, suffix, node):
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node)
    return loader.construct_scalar(node)
Loader.add_multi_constructor("!", tagged)
for path in sys.argv[1:]:
    for name, service in (yaml.load(open(path), Loader).get("services") or {}).items():
        if "build" in service:
            dockerfile = service["build"]["dockerfile"]
            suffix = dockerfile.rsplit("Dockerfile.", 1)[1] if "Dockerfile." in dockerfile else name
            print(name, dockerfile, service.get("image") or f"localhost/rlm-rs/{suffix}:dev")
EOF
}
BUILT=()
BUILD=(podman build --format docker --pull=never --network host
       -v "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
build_all() {  # compose file: build its services' images, each Dockerfile once
  local service dockerfile tag s
  declare -A done_tags=()
  while read -r service dockerfile tag; do
    if [ -z "${done_tags[$tag]:-}" ]; then
      s=$(date +%s)
      quiet "build-$(basename "$tag" | tr ':' '-')" "${BUILD[@]}" -f "$dockerfile" -t "$tag" .
      log "  built $tag from $dockerfile in $(( $(date +%s) - s ))s"
      done_tags[$tag]=1
    fi
    # the name compose gives a service's image when the service has no `image:`
    [[ "$tag" != localhost/rlm-rs/*:dev ]] || podman tag "$tag" "localhost/${PROJECT}_${service}:latest"
  done < <(compose_builds "$1")
}
images() {
  # The moto server shares nothing with the appliance's images: built alongside them.
  build_all compose.moto.yaml &
  local moto=$!
  build_all compose.yaml
  wait "$moto" || die "building compose.moto.yaml's images"
  mapfile -t BUILT < <(compose_builds compose.yaml compose.moto.yaml | awk '!seen[$3]++ {print $3}')
  for tag in "${BUILT[@]}"; do podman image exists "$tag" || die "image $tag was not built"; done
  [ ${#BUILT[@]} -ge 6 ] || die "expected five appliance images and the moto server: ${BUILT[*]}"
}

# ---------------------------------------------------------------------------- helpers
PC=("$TOOLS/bin/podman-compose" -p "$PROJECT" -f compose.yaml -f compose.moto.yaml)
container() { echo "${PROJECT}_$1_1"; }
wait_healthy() {  # service seconds
  local name end state; name=$(container "$1"); end=$(( $(date +%s) + $2 ))
  while [ "$(date +%s)" -lt "$end" ]; do
    state=$(podman inspect --format '{{.State.Status}}' "$name" 2>/dev/null || echo missing)
    if [ "$state" = exited ] || [ "$state" = missing ]; then
      podman logs --tail 30 "$name" 2>&1 | grep -v -i systemd || true
      die "$1 is $state, not healthy"
    fi
    if timeout 10 podman healthcheck run "$name" > /dev/null 2>&1; then
      log "  $1 healthy"; return 0
    fi
    sleep 1
  done
  podman logs --tail 30 "$name" 2>&1 | grep -v -i systemd || true
  die "$1 not healthy after $2 s"
}
up() { local label="up-$*"; quiet "${label// /-}" "${PC[@]}" up -d --no-deps "$@"; }
run_once() {  # label seconds service command...: a one-off container of a service
  local label=$1 seconds=$2; shift 2
  timeout "$seconds" "${PC[@]}" run --rm --no-deps -T "$@" > "$OUT/$label.log" 2>&1 \
    || { tail -30 "$OUT/$label.log"; die "$label (full log: $OUT/$label.log)"; }
}

cleanup() {
  local rc=$?
  if [ -n "$WORK" ] && [ -f "$WORK/compose.yaml" ] && [ -x "$TOOLS/bin/podman-compose" ]; then
    if [ "$rc" != 0 ]; then
      for c in $(podman ps -a --filter "label=io.podman.compose.project=$PROJECT" --format '{{.Names}}' 2>/dev/null); do
        podman logs "$c" > "$OUT/container-$c.log" 2>&1 || true
      done
      log "container logs: $OUT/container-*.log"
    fi
    (cd "$WORK" && "${PC[@]}" down -v -t 5 > "$OUT/down.log" 2>&1) || true
  fi
  [ -z "$WORK" ] || rm -rf "$WORK"
  [ "$rc" = 0 ] || log "FAILED (rc=$rc); logs in $OUT"
}
trap cleanup EXIT

# ---------------------------------------------------------------------------- sandbox
sandbox() {
  # The pool exactly as compose.yaml ships it (user 10001, its capabilities, seccomp
  # profile, read-only root, no network); its entry point runs doctor and refuses to
  # serve in strict mode (the default) unless every layer is active.
  up sandbox-pool
  wait_healthy sandbox-pool 90
  local name; name=$(container sandbox-pool)
  [ "$(podman exec "$name" printenv RLM_SANDBOX_STRICT)" = 1 ] || die "the pool is not in strict mode"
  podman exec "$name" rlm-rs sandbox doctor --json > "$OUT/doctor.json" 2> "$OUT/doctor.err" \
    || { cat "$OUT/doctor.err"; die "sandbox doctor in the shipped container reports missing layers"; }
  podman exec -i "$name" python - < tests/containers/pool_probe.py > "$OUT/pool-probe.json" 2>&1 \
    || { cat "$OUT/pool-probe.json"; die "real steps in the shipped pool"; }
  log "  probe: $(tr -d '\n ' < "$OUT/pool-probe.json" | cut -c1-400)"
}

# ---------------------------------------------------------------------------- compose
compose() {
  local busy; busy=$(ss -ltnH '( sport = :8080 or sport = :4566 )' 2>/dev/null | head -1 || true)
  [ -z "$busy" ] || die "a host port compose.yaml publishes (8080, 4566) is in use: $busy"
  run_once volume-init 60 volume-init
  up localstack parser
  wait_healthy localstack 90
  run_once storage-init 120 storage-init
  up control-plane ingestion-worker
  wait_healthy control-plane 90
  up gateway
  wait_healthy gateway 60
  wait_healthy parser 30
  curl -fsS -m 5 http://127.0.0.1:8080/health/live > /dev/null \
    || die "gateway /health/live on the published port 127.0.0.1:8080"
  run_once keys 60 storage-init rlm-rs keys create --tenant demo
  local key; key=$(tail -1 "$OUT/keys.log" | tr -d '\r')
  [[ ${#key} -ge 20 && "$key" != *" "* ]] || die "no API key from 'rlm-rs keys create': $key"
  run_once demo 300 storage-init rlm-rs demo --base-url http://gateway:8080 --api-key "$key"
  grep -q '^Status: COMPLETED' "$OUT/demo.log" || { cat "$OUT/demo.log"; die "demo did not complete"; }
  local verified; verified=$(grep -c '(verified)' "$OUT/demo.log" || true)
  [ "$verified" -ge 1 ] && ! grep -q 'NOT VERIFIED' "$OUT/demo.log" \
    || { cat "$OUT/demo.log"; die "demo citations not verified"; }
  log "  demo: $(grep '^Status:' "$OUT/demo.log"), $verified verified citations"
  podman ps -a --filter "label=io.podman.compose.project=$PROJECT" --format '  {{.Names}}: {{.Status}}'
}

# ---------------------------------------------------------------------------- run
log "logs in $OUT"
stage engine engine
stage base base
# A copy of the tree (tracked and untracked, not ignored files): .env and the like go there.
WORK=$(mktemp -d /tmp/rlm-containers-work.XXXXXX)
git ls-files -z --cached --others --exclude-standard \
  | tar --null --ignore-failed-read -T - -cf - 2> /dev/null | tar -xf - -C "$WORK"
cd "$WORK"
# The operator's .env: the example as it is (API_KEY_PEPPER, RATE_LIMITS_JSON= ...).
cp .env.example .env
(cd "$WORK" && "${PC[@]}" down -v -t 5 > /dev/null 2>&1) || true   # leftovers of an aborted run
stage images images
stage sandbox sandbox
stage compose compose

echo
echo "== containers-test: passed in $(( $(date +%s) - T0 ))s"
printf '  stage %s\n' "${STAGE_TIMES[@]}"
echo "== image sizes"
for tag in "$BASE_IMAGE" "${BUILT[@]}"; do
  printf '  %-48s %s\n' "$tag" "$(podman image inspect --format '{{.Size}}' "$tag" \
    | awk '{printf "%.0f MB", $1 / 1e6}')"
done
echo "== rlm-rs sandbox doctor in the shipped sandbox-pool container (user 10001, compose.yaml flags)"
"$TOOLS/bin/python" - "$OUT/doctor.json" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
print(f"  all_active={report['all_active']} strict={report['strict']} uid={report.get('uid')} "
      f"privilege_path={report.get('privilege_path')} missing={report['missing']}")
for layer in report["layers"]:
    print(f"  {'ok ' if layer['active'] else 'MISSING'} {layer['name']:<17} {layer['detail']}")
EOF
echo "== real steps in it: $OUT/pool-probe.json"
sed 's/^/  /' "$OUT/pool-probe.json"
