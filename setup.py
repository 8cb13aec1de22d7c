import os

from setuptools import Extension, find_packages, setup
from Cython.Build import cythonize

# Cython and the C compiler on every core: a fresh install builds 14 modules.
CORES = len(os.sched_getaffinity(0))

extensions = cythonize(
    [Extension("engine._parse", ["engine/_parse.pyx"]),
     # zlib linked by run-time name, as SQLite below: no development headers.
     Extension("engine._frames", ["engine/_frames.pyx"], extra_link_args=["-l:libz.so.1"]),
     Extension("engine.http._connection", ["engine/http/_connection.pyx"]),
     Extension("engine.ingest._spool", ["engine/ingest/_spool.pyx"]),
     Extension("engine.ingest._track", ["engine/ingest/_track.pyx"]),
     Extension("engine.limits._bucket", ["engine/limits/_bucket.pyx"]),
     Extension("engine.system._arenas", ["engine/system/_arenas.pyx"]),
     Extension("engine.store.sinks.cassandra._cqlframe",
               ["engine/store/sinks/cassandra/_cqlframe.pyx"]),
     # Linked by run-time name: the library Python's sqlite3 module uses, no
     # development package needed (the module declares the API it calls).
     Extension("engine.store.sinks._sqlite_write", ["engine/store/sinks/_sqlite_write.pyx"],
               extra_link_args=["-l:libsqlite3.so.0"])],
    compiler_directives={"language_level": "3", "boundscheck": False,
                         "wraparound": False, "cdivision": True},
    nthreads=CORES,
)
# Plain Python compiled as it stands: the store's planners, typed by the .pxd
# beside each file (~25 % less CPU, loadtest/bench_plan.py), and the native
# Cassandra wire's Python side (untyped). Python's own semantics kept (no
# boundscheck/wraparound/cdivision shortcuts); where the build is missing, the
# planners run as Python (the native wire needs _cqlframe, built above).
COMPILED_PY = ["engine/store/fanout.py", "engine/store/sinks/cassandra/plan.py",
               "engine/store/sinks/cassandra/stamps.py",
               "engine/store/sinks/cassandra/native_conn.py",
               "engine/store/sinks/cassandra/wire_native.py"]
extensions += cythonize([Extension(p[:-3].replace("/", "."), [p]) for p in COMPILED_PY],
                        compiler_directives={"language_level": "3"}, nthreads=CORES)

setup(
    name="tracker",
    version="0.1.0",
    description="Self-hosted visitor and growth-event collector",
    packages=find_packages(include=["engine", "engine.*", "workers", "workers.*", "schema"]),
    package_data={"": ["*.pyx", "*.pxd", "*.pyi"], "schema": ["*.sql", "*.cql"]},
    ext_modules=extensions,
    options={"build_ext": {"parallel": CORES}},
    python_requires=">=3.11",
    install_requires=[
        "uvloop==0.23.0",
        "httptools==0.9.0",
        "orjson==3.13.0",
        "prometheus-client==0.26.0",
        "tzdata==2026.6",
        "nats-py==2.16.0",
        "acsylla==1.2.0",         # the Cassandra sink's driver (docs/cassandra.md: chosen by measurement)
        "cassandra-driver==3.30.1",  # its alternative (Driver: "cassandra-driver"); tests read back with it
        "acme==5.9.0",            # ACME client (TLS "acme"), certbot's protocol library
        "josepy==2.2.0",
        "cryptography==50.0.2",
        "lz4==4.4.4",             # LZ4 frames: compressed bodies and WebSocket frames
        "wsproto==1.3.2",         # WebSocket framing (sans-IO) for /tr/vN/ws
        "h11==0.16.0",            # (wsproto's HTTP/1.1 handshake)
        "setproctitle==1.3.8",   # process titles: tracker: http-0, store-0, ...
        "ua-parser==1.0.2",       # user agents read in the store (engine/store/agents.py)
        "ua-parser-builtins==202610",   # (its maintained regexes)
        "ua-parser-rs==0.1.5",    # (the regexes compiled in Rust: ~10x faster)
        "confluent-kafka==2.16.1",   # Kafka sink and repeater (librdkafka; loadtest/bench_kafka.py)
    ],
    extras_require={"test": ["duckdb==2.0.1",   # loadtest/bench_store.py's other candidate
                             "pytest==9.2.0", "hypothesis==6.170.17", "aiohttp==3.14.5",
                             "pyyaml==6.0.3",
                             "aiokafka==0.14.0",   # bench_kafka.py's client comparison
                             "jsonschema==4.26.0",   # docs/kafka/event.schema.json check
                             "locust==2.47.0", "matplotlib==3.11.2"],
                    "loadtest": ["locust==2.47.0", "matplotlib==3.11.2", "aiokafka==0.14.0"]},
    entry_points={
        "console_scripts": ["tracker = engine.cli:main"],
        "tracker.sinks": ["sqlite = engine.store.sinks.sqlite:SQLiteSink",
                          "nats = engine.store.sinks.nats:NatsSink",
                          "cassandra = engine.store.sinks.cassandra:CassandraSink",
                          "kafka = engine.store.sinks.kafka:KafkaSink"],
    },
)
