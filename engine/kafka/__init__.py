"""Kafka: the sink's and the repeater's shared options, and the repeater."""
