"""What the host allows: usable CPUs, resource limits, named threads."""
