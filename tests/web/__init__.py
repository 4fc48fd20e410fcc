"""The web tests: the HTTP API, the dashboard, metrics."""
