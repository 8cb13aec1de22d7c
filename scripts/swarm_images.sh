#!/usr/bin/env bash
# Build, with Docker, every image docker-stack.yml runs, where no container
# registry is reachable: only Debian's archive, PyPI and Maven Central.
#
#   scripts/swarm_images.sh [TAG]        # TAG defaults to "local"
#
# Images (printed at the end as the variables docker-stack.yml reads):
#   tracker-base:bookworm   a bare Debian (scripts/container_base.sh, debootstrap)
#   tracker-nats:TAG        Debian's nats-server                      (docker/nats)
#   tracker-cassandra:TAG   Cassandra 5.0's jars + Debian's JDK 17    (docker/cassandra)
#   tracker:TAG             the collector, from the repo's Dockerfile on that base
#
# The docker CLI is $DOCKER (default: docker) talking to $DOCKER_HOST. The
# Dockerfile's build secret needs BuildKit: the Docker client of Debian's engine package (20.10)
# has it built in (DOCKER_BUILDKIT=1); newer clients need the buildx plugin.
# Unchanged layers come from the engine's build cache, so a rerun is quick.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
tag="${1:-local}"
docker="${DOCKER:-docker}"
export DOCKER_BUILDKIT=1

log() { echo "swarm_images: $*" >&2; }
build() {   # build IMAGE [docker build arguments...]
    local image="$1" t0=$SECONDS
    shift
    "$docker" build -q -t "$image" "$@" >/dev/null
    log "$image built in $((SECONDS - t0)) s"
}

base="$(DOCKER="$docker" "$here/container_base.sh" docker)"

build "tracker-nats:$tag" --build-arg "BASE_IMAGE=$base" "$repo/docker/nats"

# Cassandra: the jars scripts/cassandra_node.py resolves (and caches), copied
# next to the image's own files into one build context.
lib="$(python3 "$here/cassandra_node.py" resolve | sed -n 's/: [0-9]* jars.*//p')"
[ -f "$lib/$(ls "$lib" | grep -m1 '^cassandra-all-')" ] || { log "no cassandra-all jar in '$lib'"; exit 1; }
context="$(mktemp -d /tmp/tracker-cassandra-image.XXXXXX)"
trap 'rm -rf "$context"' EXIT
cp -r "$repo/docker/cassandra/." "$context/"
cp -r "$lib" "$context/lib"
build "tracker-cassandra:$tag" --build-arg "BASE_IMAGE=$base" "$context"

# Behind a TLS-intercepting proxy pip inside the build needs its CA: the
# bundle pip trusts here is passed as the build secret (not kept in a layer).
secret=()
for ca in "${PIP_CERT:-}" "${REQUESTS_CA_BUNDLE:-}" "${SSL_CERT_FILE:-}"; do
    if [ -n "$ca" ] && [ -f "$ca" ]; then secret=(--secret "id=build-ca,src=$ca"); break; fi
done
build "tracker:$tag" "${secret[@]}" --build-arg "BASE_IMAGE=$base" "$repo"

echo "TRACKER_IMAGE=tracker:$tag"
echo "NATS_IMAGE=tracker-nats:$tag"
echo "CASSANDRA_IMAGE=tracker-cassandra:$tag"
