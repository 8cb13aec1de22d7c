#!/usr/bin/env bash
# Make sure the local base image exists: a bare Debian made with debootstrap,
# for machines that reach Debian mirrors but no container registry.
#
#   scripts/container_base.sh            # prints the image name when ready
#
# Cost is paid once per machine: the root filesystem is kept as a tarball
# under ~/.cache/tracker and imported from there when podman's storage lacks
# the image (CI caches that directory; a fresh podman store re-imports in
# seconds instead of re-running debootstrap for minutes).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
suite="${TRACKER_BASE_SUITE:-bookworm}"
mirror="${TRACKER_BASE_MIRROR:-http://deb.debian.org/debian}"
image="${TRACKER_BASE_IMAGE:-localhost/tracker-base:$suite}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/tracker"
tarball="$cache/base-$suite-minbase.tar"
podman="$here/podman.sh"

log() { echo "container_base: $*" >&2; }

if "$podman" image exists "$image"; then
    echo "$image"
    exit 0
fi

if [ ! -s "$tarball" ]; then
    mkdir -p "$cache"
    root="$(mktemp -d /tmp/tracker-base.XXXXXX)"
    trap 'rm -rf "$root"' EXIT
    log "debootstrap --variant=minbase $suite (first run on this machine)"
    debootstrap --variant=minbase "$suite" "$root" "$mirror" >&2
    # Package lists and downloaded .debs are dead weight in an image; builds
    # run apt-get update themselves.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
    # mktemp made the directory 0700 and it becomes the image's "/": a
    # non-root user could not reach anything in it.
    chmod 0755 "$root"
    tar --numeric-owner -C "$root" -cf "$tarball.part" .
    mv "$tarball.part" "$tarball"
fi

log "importing $tarball as $image"
"$podman" import --change 'CMD ["/bin/bash"]' "$tarball" "$image" >&2
echo "$image"
