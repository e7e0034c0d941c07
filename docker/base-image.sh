#!/usr/bin/env bash
# Build a Debian bookworm base image with debootstrap and import it into podman, for machines that reach a
# Debian mirror but no container registry (README, Deployment). The result stands in for the Dockerfile's
# default base (python:3.12-slim-bookworm): build with --build-arg BASE_IMAGE=<name> --pull=never.
#
#   usage: docker/base-image.sh [IMAGE]   (default localhost/gateway-base:bookworm; root; needs debootstrap)
#
# The mirror is the one apt already uses here (DEBIAN_MIRROR overrides it); an image that already exists is
# kept (FORCE=1 rebuilds it). Python is Debian's (3.11), which the project supports.
set -euo pipefail
IMAGE="${1:-localhost/gateway-base:bookworm}"
SUITE=bookworm

if podman image exists "$IMAGE" && [ "${FORCE:-0}" != 1 ]; then
    echo "base-image: $IMAGE already present (FORCE=1 rebuilds it)"
    exit 0
fi

# The first Debian archive URI apt is configured with (deb822 .sources or one-line .list), else deb.debian.org.
mirror="${DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
    mirror="$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk 'tolower($1)=="uris:" && $2 ~ /\/debian\/?$/ {print $2; exit}')"
fi
if [ -z "$mirror" ]; then
    mirror="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk '$1=="deb" {for (i=2;i<=NF;i++) if ($i ~ /^https?:\/\/.*\/debian\/?$/) {print $i; exit}}' | head -n1)"
fi
mirror="${mirror:-http://deb.debian.org/debian}"

work="$(mktemp -d /var/tmp/gateway-base.XXXXXX)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
echo "base-image: debootstrap --variant=minbase $SUITE from $mirror"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$SUITE" "$rootfs" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || { tail -n 40 "$work/debootstrap.log" >&2; exit 1; }

# What a container base needs: apt sources for later RUN steps, no caches or docs, no daemons started.
# Security updates too when the mirror is deb.debian.org-shaped (…/debian beside …/debian-security).
{
    echo "deb $mirror $SUITE main"
    echo "deb $mirror $SUITE-updates main"
    case "$mirror" in
        */debian | */debian/) echo "deb ${mirror%/}-security $SUITE-security main" ;;
    esac
} >"$rootfs/etc/apt/sources.list"
printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
chmod 755 "$rootfs/usr/sbin/policy-rc.d"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/usr/share/doc/* \
    "$rootfs"/usr/share/man/* "$rootfs"/tmp/* "$rootfs"/dev/*

tar --numeric-owner -C "$rootfs" -c . \
    | podman import --quiet --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$IMAGE" >/dev/null
echo "base-image: imported $IMAGE ($(podman image inspect --format '{{.Size}}' "$IMAGE") bytes)"
