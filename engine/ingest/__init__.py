"""The ingest stage: tracking routes, request parsing glue, the spool writer and group commit."""
