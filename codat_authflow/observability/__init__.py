"""Operational visibility shared by every process: metrics kept in Redis
(`codat_authflow.observability.metrics`, no Flask needed, so the RQ workers use it too) and
the Prometheus collector the web app exposes at `/metrics`
(`codat_authflow.observability.collector`)."""
