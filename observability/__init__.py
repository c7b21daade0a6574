"""Operational visibility shared by every process: metrics kept in Redis
(`observability.metrics`, no Flask needed, so the RQ workers use it too) and
the Prometheus collector the web app exposes at `/metrics`
(`observability.collector`)."""
