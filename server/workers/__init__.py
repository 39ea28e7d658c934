"""Several serving processes on one port: the supervisor and what a worker needs to know."""
