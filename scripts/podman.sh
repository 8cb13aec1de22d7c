#!/usr/bin/env bash
# podman with this repo's settings for engine-less machines (runc, vfs,
# ulimits within the sandbox's limits): docker/podman/*.conf say why.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CONTAINERS_CONF="$here/docker/podman/containers.conf"
export CONTAINERS_STORAGE_CONF="$here/docker/podman/storage.conf"
exec podman "$@"
