"""The storage stage: spool reading, batching, the one fan-out, and the sinks."""
