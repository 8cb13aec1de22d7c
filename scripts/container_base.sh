#!/usr/bin/env bash
# Make sure the local base image exists: a bare Debian made with debootstrap,
# for machines that reach Debian's package archive but no container registry.
#
#   scripts/container_base.sh            # podman (scripts/podman.sh); prints the image name
#   scripts/container_base.sh docker     # the docker CLI, at $DOCKER_HOST
#
# Cost is paid once per machine: the root filesystem is kept as a tarball
# under ~/.cache/tracker and imported from there when the engine's storage
# lacks the image (CI caches that directory; a fresh store re-imports in
# seconds instead of re-running debootstrap for minutes). debootstrap fetches
# from its own default archive.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
engine="${1:-podman}"
suite="${TRACKER_BASE_SUITE:-bookworm}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/tracker"
tarball="$cache/base-$suite-minbase.tar"

case "$engine" in
    podman)
        image="${TRACKER_BASE_IMAGE:-localhost/tracker-base:$suite}"
        cli=("$here/podman.sh")
        has_image() { "${cli[@]}" image exists "$image"; }
        ;;
    docker)
        image="${TRACKER_BASE_IMAGE:-tracker-base:$suite}"
        # The engine's own client: Debian's Docker engine package ships it at /usr/bin/docker.
        cli=("${DOCKER:-docker}")
        has_image() { "${cli[@]}" image inspect "$image" >/dev/null 2>&1; }
        ;;
    *) echo "usage: $0 [podman|docker]" >&2; exit 2 ;;
esac

log() { echo "container_base: $*" >&2; }

if has_image; then
    echo "$image"
    exit 0
fi

if [ ! -s "$tarball" ]; then
    mkdir -p "$cache"
    root="$(mktemp -d /tmp/tracker-base.XXXXXX)"
    trap 'rm -rf "$root"' EXIT
    log "debootstrap --variant=minbase $suite (first run on this machine)"
    debootstrap --variant=minbase "$suite" "$root" >&2
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
"${cli[@]}" import --change 'CMD ["/bin/bash"]' "$tarball" "$image" >&2
echo "$image"
