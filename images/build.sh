#!/usr/bin/env bash
# Build the runtime and agent images without a Docker engine (buildah, vfs storage,
# chroot isolation), then check and smoke-test the runtime image.
#
#   images/build.sh            # or: make image-build
#
# The Dockerfiles' base is the official python:3.11.7-slim-bookworm. Where no registry is
# reachable, the base is made from the Debian mirror instead: debootstrap bookworm
# (minbase) with Debian's python3 (3.11) and python3-venv, trimmed like debian:*-slim,
# imported into buildah as localhost/fedpipe-base, and passed as PYTHON_IMAGE. Every
# Dockerfile step then runs unchanged.
#
# Environment (all optional):
#   WORK=/work/imgbuild       buildah storage, the base rootfs and logs (outside the repo)
#   BASE=auto|pull|debootstrap  auto: pull PYTHON_IMAGE, fall back to debootstrap
#   PYTHON_IMAGE=python:3.11.7-slim-bookworm
#   MIRROR=http://deb.debian.org/debian
#   TAG=0.1.0
#   HOST_CA=/etc/ssl/certs/ca-certificates.crt  trusted by pip during the build only
#     (for a TLS-intercepting proxy); mounted read-only, not copied into the image
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-/work/imgbuild}
BASE=${BASE:-auto}
PYTHON_IMAGE=${PYTHON_IMAGE:-python:3.11.7-slim-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
TAG=${TAG:-0.1.0}
HOST_CA=${HOST_CA:-/etc/ssl/certs/ca-certificates.crt}
RUNTIME=localhost/fedpipe-runtime:$TAG
AGENT=localhost/fedpipe-agent:$TAG
LOCAL_BASE=localhost/fedpipe-base:bookworm-py3.11

case "$WORK" in "$ROOT"|"$ROOT"/*)
    echo "WORK=$WORK is inside the repo; image storage must stay outside it" >&2
    exit 2
    ;;
esac
mkdir -p "$WORK"
export BUILDAH_ISOLATION=chroot
BUILDAH=(buildah --root "$WORK/storage" --runroot "$WORK/run" --storage-driver vfs)

step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%T)"; }
seconds() { date +%s; }

make_base() {
    # A debian:bookworm-slim-like root filesystem with Debian's Python 3.11, from the mirror.
    local rootfs=$WORK/rootfs
    rm -rf "$rootfs"
    debootstrap --variant=minbase \
        --include=python3,python3-venv,python-is-python3,ca-certificates,netbase,tzdata \
        bookworm "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1
    # What debian:*-slim leaves out: docs, man pages, translations, apt's lists and caches.
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
    find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*
    find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias \
        -exec rm -rf {} +
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old
    find "$rootfs/usr/lib/python3.11" -name __pycache__ -prune -exec rm -rf {} +
    local ctr
    ctr=$("${BUILDAH[@]}" from scratch)
    cp -a "$rootfs/." "$("${BUILDAH[@]}" mount "$ctr")/"
    "${BUILDAH[@]}" umount "$ctr" >/dev/null
    "${BUILDAH[@]}" config --env PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin \
        --env LANG=C.UTF-8 --cmd python3 \
        --label org.opencontainers.image.description="debootstrap bookworm minbase + python3" \
        "$ctr"
    "${BUILDAH[@]}" commit --rm "$ctr" "$LOCAL_BASE" >/dev/null
    rm -rf "$rootfs"
}

t0=$(seconds)
step "base image"
case "$BASE" in
pull) "${BUILDAH[@]}" pull "$PYTHON_IMAGE" ;;
debootstrap) make_base && PYTHON_IMAGE=$LOCAL_BASE ;;
auto)
    if "${BUILDAH[@]}" inspect --type image "$LOCAL_BASE" >/dev/null 2>&1; then
        echo "reusing $LOCAL_BASE (remove it to make it again)"
        PYTHON_IMAGE=$LOCAL_BASE
    elif ! "${BUILDAH[@]}" pull -q "$PYTHON_IMAGE" 2>"$WORK/pull.err"; then
        echo "pull failed: $(tail -n1 "$WORK/pull.err")"
        echo "building the base from $MIRROR with debootstrap"
        make_base
        PYTHON_IMAGE=$LOCAL_BASE
    fi
    ;;
*)
    echo "BASE must be auto, pull or debootstrap" >&2
    exit 2
    ;;
esac
t_base=$(($(seconds) - t0))
echo "base: $PYTHON_IMAGE (${t_base}s)"

# pip inside the build trusts the build host's CA bundle (read-only bind mounts, so
# neither the bundle nor this pip.conf ends up in a layer).
printf '[global]\ncert = /run/fedpipe-build/ca.crt\n' >"$WORK/pip.conf"
MOUNTS=(-v "$HOST_CA:/run/fedpipe-build/ca.crt:ro" -v "$WORK/pip.conf:/etc/pip.conf:ro")

step "runtime image"
t1=$(seconds)
"${BUILDAH[@]}" bud --isolation chroot --network host "${MOUNTS[@]}" \
    --build-arg PYTHON_IMAGE="$PYTHON_IMAGE" -f "$ROOT/images/runtime.Dockerfile" \
    -t "$RUNTIME" "$ROOT"
t_runtime=$(($(seconds) - t1))

step "agent image"
"${BUILDAH[@]}" bud --isolation chroot --build-arg RUNTIME_IMAGE="$RUNTIME" \
    -f "$ROOT/images/agent.Dockerfile" -t "$AGENT" "$ROOT"

step "checks"
"${BUILDAH[@]}" images
user=$("${BUILDAH[@]}" inspect --type image --format '{{.OCIv1.Config.User}}' "$RUNTIME")
echo "runtime image user: $user"
case "${user%%:*}" in "" | 0 | root)
    echo "FAIL: the runtime image runs as root" >&2
    exit 1
    ;;
esac
ctr=$("${BUILDAH[@]}" from "$RUNTIME")
trap '"${BUILDAH[@]}" rm "$ctr" >/dev/null' EXIT
mnt=$("${BUILDAH[@]}" mount "$ctr")
echo "unpacked size: $(du -sh --apparent-size "$mnt" | cut -f1) (venv $(du -sh --apparent-size "$mnt/opt/venv" | cut -f1))"
run() { "${BUILDAH[@]}" run --isolation chroot "$ctr" -- "$@"; }

step "smoke test (as $user)"
run id
run python -c 'import fedpipe, fedpipe.components, kfp, tensorflow as tf; print("fedpipe", fedpipe.__version__, "tensorflow", tf.__version__)'
run fedpipe --help >/dev/null
run fedpipe compile --rounds 2 --output /tmp/federated_training.yaml
# initialize -> select -> broadcast from their component.yaml (smoke_components.py).
"${BUILDAH[@]}" copy --chown 10001:10001 "$ctr" "$ROOT/components" /tmp/smoke/components >/dev/null
"${BUILDAH[@]}" copy --chown 10001:10001 "$ctr" "$ROOT/images/smoke_components.py" /tmp/smoke/ >/dev/null
run python /tmp/smoke/smoke_components.py /tmp/smoke/components /tmp/smoke/scratch >"$WORK/smoke.log" 2>&1 ||
    { tail -n 40 "$WORK/smoke.log"; exit 1; }
tail -n 1 "$WORK/smoke.log"
echo "build: base ${t_base}s, runtime image ${t_runtime}s, total $(($(seconds) - t0))s"
