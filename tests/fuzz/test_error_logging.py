"""Regression tests for what the fuzz found: an unexpected error is answered
with our JSON 500 and logged with the request's context (never a bare
traceback); deeply nested JSON is a 400 on every endpoint that reads JSON."""

from __future__ import annotations

import fakeredis
import pytest

from tests.fuzz.support import API_TOKEN, build_app, check_error_shape, check_logged

pytestmark = pytest.mark.resilience
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture
def app_and_logs():
    return build_app(fakeredis.FakeRedis(), ALLOW_PRIVATE_SUBSCRIBER_URLS="1")


def test_an_unexpected_error_is_logged_with_the_request_it_broke(app_and_logs, monkeypatch):
    app, logs = app_and_logs

    def broken(company_id):
        raise ZeroDivisionError("a bug")

    monkeypatch.setitem(app.view_functions, "api.companies.get_company", broken)
    with logs.collect() as lines:
        response = app.test_client().get("/api/companies/abc", headers=AUTH)
    assert response.status_code == 500
    assert check_error_shape(500, response.data)["code"] == "internal_error"
    [traceback_line] = [line for line in lines if "exception" in line]
    assert "ZeroDivisionError" in traceback_line["exception"]
    check_logged(lines, "GET", "/api/companies/abc", 500)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/subscriptions"),
        ("PATCH", "/api/subscriptions/sub_" + "0" * 32),
        ("POST", "/api/deliveries/replay"),
        ("POST", "/api/companies"),
    ],
)
def test_deeply_nested_json_is_a_400(app_and_logs, method, path):
    app, logs = app_and_logs
    body = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    with logs.collect() as lines:
        response = app.test_client().open(
            path,
            method=method,
            data=body,
            headers={**AUTH, "Content-Type": "application/json"},
        )
    assert response.status_code in (400, 404, 413), response.data[:300]
    check_error_shape(response.status_code, response.data)
    check_logged(lines, method, path, response.status_code)


class _BrokenChunkedBody:
    """What gunicorn's body reader does with `Transfer-Encoding: chunked` and a
    chunk size that is not hexadecimal, or a client gone mid-body."""

    def __init__(self, error: Exception):
        self.error = error

    def read(self, *_args):
        raise self.error


@pytest.mark.parametrize("path", ["/webhooks/codat", "/api/subscriptions", "/api/companies"])
@pytest.mark.parametrize("cut", ["bad_chunk_size", "client_gone"])
def test_an_unreadable_chunked_body_is_a_400_not_a_500(app_and_logs, path, cut):
    from gunicorn.http.errors import InvalidChunkSize, NoMoreData

    app, logs = app_and_logs
    error = InvalidChunkSize(b"ZZ") if cut == "bad_chunk_size" else NoMoreData(b"")
    with logs.collect() as lines:
        response = app.test_client().post(
            path,
            headers={**AUTH, "Content-Type": "application/json"},
            # What gunicorn hands the app for `Transfer-Encoding: chunked`.
            environ_overrides={
                "wsgi.input": _BrokenChunkedBody(error),
                "wsgi.input_terminated": True,
            },
        )
    assert response.status_code == 400, response.data
    # (werkzeug itself turns an OSError while reading into a 400 bad_request)
    assert check_error_shape(400, response.data)["code"] in ("malformed_body", "bad_request")
    check_logged(lines, "POST", path, 400)
