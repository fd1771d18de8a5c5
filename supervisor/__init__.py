"""cfgsup: a PID 1 for containers that hot-applies mounted ConfigMap and Secret changes."""
