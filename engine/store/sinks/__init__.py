"""Sinks: where batches of events are written (SQLite, Cassandra, NATS, ...).

Each sink is a class registered under the ``tracker.sinks`` entry-point group
with the ``Service`` name used in a config ``Notify`` entry.
"""
