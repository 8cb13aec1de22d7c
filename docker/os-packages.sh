#!/bin/sh
# Install, with apt, what one Dockerfile stage needs and its base image lacks.
#
#   os-packages.sh build | runtime
#
# One Dockerfile serves two kinds of base: an official python image (has
# Python and its headers, lacks a C compiler) and a bare Debian made with
# debootstrap where no registry is reachable (has neither). Asking "is there a
# python3?" tells them apart.
set -eu
stage="$1"
packages=""

if ! command -v python3 >/dev/null 2>&1; then
    case "$stage" in
        # python3-dev: Python.h for the Cython extensions; python3-venv: ensurepip.
        build) packages="python3 python3-dev python3-venv" ;;
        # ca-certificates: outbound TLS (stores, ACME) trusts the usual CAs.
        runtime) packages="python3 ca-certificates" ;;
    esac
fi
if [ "$stage" = build ]; then
    packages="$packages gcc libc6-dev"
fi

if [ -n "$packages" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages
    rm -rf /var/lib/apt/lists/*
fi

if [ "$stage" = build ]; then
    # Fail here, with the reason, rather than deep inside the compiler output.
    python3 -c 'import os, sysconfig, sys
h = os.path.join(sysconfig.get_paths()["include"], "Python.h")
sys.exit(0 if os.path.exists(h) else "no " + h + ": the base image lacks Python headers")'
fi
