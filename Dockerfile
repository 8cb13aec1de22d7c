# Tracker collector image.
#
#   docker build -t tracker .                  # on the official python image
#   scripts/podman.sh build --format docker \
#       --build-arg BASE_IMAGE=localhost/tracker-base:bookworm -t tracker .
#                                              # on a bare Debian (scripts/container_base.sh);
#                                              # --format docker keeps the HEALTHCHECK
#
# Two stages: "build" compiles the Cython extensions into a wheel and installs
# it with its dependencies into a venv; the runtime stage gets that venv (the
# installed wheel and its dependencies) and nothing else from the build: no
# compiler, no sources. docs/docker.md has the rest.

# Any Debian-based image: an official python image (default) or a bare Debian.
# Both stages use the same base, so the venv's interpreter path matches.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
COPY docker/os-packages.sh /usr/local/sbin/os-packages
RUN os-packages build
RUN python3 -m venv /opt/tracker
WORKDIR /src
COPY setup.py pyproject.toml ./
COPY engine engine
COPY workers workers
COPY schema schema
# The wheel is built in pip's isolated build environment (Cython, setuptools
# pinned in pyproject.toml); dependencies come as wheels from the index.
# Behind a TLS-intercepting proxy, pass its CA bundle as the optional build
# secret "build-ca" (--secret id=build-ca,src=FILE); it is not kept in a layer.
RUN --mount=type=secret,id=build-ca \
    if [ -s /run/secrets/build-ca ]; then export PIP_CERT=/run/secrets/build-ca; fi \
    && /opt/tracker/bin/pip wheel --no-cache-dir --wheel-dir /wheels . \
    && /opt/tracker/bin/pip install --no-cache-dir --no-index --find-links /wheels tracker \
    && /opt/tracker/bin/tracker --version

FROM ${BASE_IMAGE}
COPY docker/os-packages.sh /usr/local/sbin/os-packages
RUN os-packages runtime && rm /usr/local/sbin/os-packages
# A fixed uid, so a bind-mounted data directory can be chowned to it ahead of time.
RUN useradd --no-log-init --user-group --uid 10001 --home-dir /var/lib/tracker \
        --no-create-home --shell /usr/sbin/nologin tracker \
    && install -d -o tracker -g tracker -m 0700 /var/lib/tracker
COPY --from=build /opt/tracker /opt/tracker
COPY docker/healthcheck.py /opt/tracker/healthcheck.py
COPY docker/entrypoint.sh /usr/local/bin/tracker-entrypoint
# The baked config: plain HTTP on :8080, SQLite and the spool in the volume.
# Mount another at /etc/tracker/config.json (or a Swarm config) to replace it.
COPY docker/config.json /etc/tracker/config.json
# PATH in full: an imported base (debootstrap) has no PATH of its own to extend.
ENV PATH=/opt/tracker/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    TRACKER_CONFIG=/etc/tracker/config.json \
    PYTHONUNBUFFERED=1
# The spool and the embedded store: what a 2xx promised lives here, so it must
# outlive the container.
VOLUME /var/lib/tracker
WORKDIR /var/lib/tracker
USER tracker
EXPOSE 8080
# SIGTERM is the supervisor's drain: /ready turns 503, in-flight requests finish,
# batches flush, exit 0 within DrainTimeoutSeconds (10 s) + 5 s. Give `stop` at
# least 20 s (`docker stop -t`, stop_grace_period); the engines' default is 10 s.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/opt/tracker/bin/python", "/opt/tracker/healthcheck.py", "/ready"]
ENTRYPOINT ["/usr/local/bin/tracker-entrypoint"]
CMD ["serve"]
