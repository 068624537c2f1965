#!/usr/bin/env bash
# Build a local Debian bookworm + python3 base image (for machines whose registry does not
# serve python:3.11-slim-bookworm) and `docker import` it as $1 (default qmedsam-base:bookworm).
set -euo pipefail
TAG=${1:-qmedsam-base:bookworm}
DOCKER=${DOCKER:-docker}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
command -v debootstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; }
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$work/rootfs" "$MIRROR"
rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/* \
       "$work"/rootfs/usr/share/doc/* "$work"/rootfs/usr/share/man/* "$work"/rootfs/usr/share/info/* \
       "$work"/rootfs/usr/share/locale/*
tar -C "$work/rootfs" -c . | $DOCKER import -c 'CMD ["/bin/bash"]' - "$TAG"
echo "base image: $TAG"
