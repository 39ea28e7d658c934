"""Users of the server: Python clients, the recserve CLI, the load harness, the release step."""
