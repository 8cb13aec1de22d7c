"""Admission limits: rate-limit policy, shared-memory buckets, client addresses, daily caps."""
