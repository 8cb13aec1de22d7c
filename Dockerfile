# First version: builds the collector with its Cython parser and runs it on the
# embedded SQLite store. (Not built in CI here: these machines have no Docker engine.)
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --home /var/lib/tracker tracker \
    && mkdir -p /var/lib/tracker/data && chown -R tracker /var/lib/tracker
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY --chown=tracker config.json /var/lib/tracker/config.json
USER tracker
WORKDIR /var/lib/tracker
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=2s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/ready').status != 200)"
ENTRYPOINT ["tracker"]
CMD ["serve", "--config", "/var/lib/tracker/config.json", "--listen", "0.0.0.0:8080"]
