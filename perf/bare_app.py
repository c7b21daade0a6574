"""The receiver benchmark's baseline: the least a Flask app can do for a webhook.

``gunicorn 'perf.bare_app:create_app()'``: ``POST /webhooks/codat`` reads the
body and answers 202 ``{"status": "queued"}``, without verifying, parsing or
storing anything; ``GET /healthz`` answers 200 so process helpers can wait on it.
"""

from __future__ import annotations

from flask import Flask, jsonify, request


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/webhooks/codat")
    def receive():
        request.get_data(cache=False)
        return jsonify({"status": "queued"}), 202

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    return app
