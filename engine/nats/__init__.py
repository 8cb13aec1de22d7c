"""NATS options and bus messages shared by the NATS sink and consumer."""
