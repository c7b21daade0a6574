"""Configuration is checked before anything starts: every problem at once, one
line each, naming the variable (codat_authflow/settings.py: config_problems,
settings_or_exit), and `flask --app app` without a configuration still helps.

The same checks through real processes (gunicorn, workers, clock, run-stack)
are in tests/integration/test_first_hour.py."""

from __future__ import annotations

import pytest
from flask.cli import cli as flask_cli

from codat_authflow.settings import ConfigError, Settings, config_problems, settings_or_exit

GOOD = {
    "REDIS_URL": "redis://127.0.0.1:6380/0",
    "API_TOKEN": "api-token",
    "CODAT_WEBHOOK_SECRETS": "whsec_aGVsbG8gd29ybGQgaGVsbG8gd29ybGQ=",
}


def test_a_complete_configuration_has_no_problem():
    assert config_problems(GOOD) == []
    assert config_problems({**GOOD, "LOG_LEVEL": "debug", "APP_ENV": "Development"}) == []
    settings = Settings.from_env({**GOOD, "LOG_LEVEL": "warn", "APP_ENV": "development"})
    assert settings.log_level == "WARN" and settings.development


def test_missing_variables_are_each_one_line_naming_it():
    problems = config_problems({})
    assert [line.split(":")[0] for line in problems] == [
        "REDIS_URL",
        "API_TOKEN",
        "CODAT_WEBHOOK_SECRETS",
    ]
    assert all("not set" in line and "\n" not in line for line in problems)


@pytest.mark.parametrize(
    ("secrets", "expected"),
    [
        ("", "CODAT_WEBHOOK_SECRETS: not set"),
        (" , ", "CODAT_WEBHOOK_SECRETS: no secret in it"),
        ("whsec_!!!", "CODAT_WEBHOOK_SECRETS: entry 1 ('whsec_!!!') is not valid base64"),
        ("whsec_", "CODAT_WEBHOOK_SECRETS: entry 1 ('whsec_') is empty after whsec_"),
        ("c2VjcmV0", "CODAT_WEBHOOK_SECRETS: entry 1 ('c2VjcmV0') does not start with whsec_"),
    ],
)
def test_bad_webhook_secrets_name_the_variable_and_the_entry(secrets, expected):
    problems = config_problems({**GOOD, "CODAT_WEBHOOK_SECRETS": secrets})
    assert len(problems) == 1
    assert problems[0].startswith(expected)


def test_every_bad_secret_is_reported_and_long_ones_are_not_printed_whole():
    secret = "whsec_" + "A" * 30 + "*"
    several = f"{GOOD['CODAT_WEBHOOK_SECRETS']}, x, {secret}"
    problems = config_problems({**GOOD, "CODAT_WEBHOOK_SECRETS": several})
    assert problems == [
        "CODAT_WEBHOOK_SECRETS: entry 2 ('x') does not start with whsec_ (expected whsec_<base64>)",
        "CODAT_WEBHOOK_SECRETS: entry 3 ('whsec_AAAA...') is not valid base64",
    ]


def test_unpadded_base64_is_accepted_as_svix_accepts_it():
    assert config_problems({**GOOD, "CODAT_WEBHOOK_SECRETS": "whsec_abc"}) == []


def test_all_problems_are_reported_together():
    env = {
        **GOOD,
        "REDIS_URL": "user:hunter2@localhost:6379",
        "LOG_LEVEL": "loud",
        "APP_ENV": "staging",
        "INBOX_BATCH_SIZE": "many",
        "DELIVERY_RETRY_SCHEDULE": "5,10",
        "LINK_SUCCESS_URL": "/done",
        "METRICS_PUBLIC": "maybe",
        "PORT": "http",
        "WEB_CONCURRENCY": "0",
        "GUNICORN_BODY_READ_TIMEOUT": "soon",
        "READY_DATA_TYPES": "balanceSheets",
    }
    problems = config_problems(env)
    named = [line.split(":")[0] for line in problems]
    assert sorted(named) == sorted(
        [
            "REDIS_URL",
            "LOG_LEVEL",
            "APP_ENV",
            "INBOX_BATCH_SIZE",
            "DELIVERY_RETRY_SCHEDULE",
            "LINK_SUCCESS_URL",
            "METRICS_PUBLIC",
            "PORT",
            "WEB_CONCURRENCY",
            "GUNICORN_BODY_READ_TIMEOUT",
            "READY_DATA_TYPES",
        ]
    )
    assert all("\n" not in line for line in problems)
    assert not any("hunter2" in line for line in problems)  # a URL's password stays out
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)
    assert raised.value.problems == problems


def test_settings_or_exit_prints_one_line_per_problem_and_exits_2(capsys):
    with pytest.raises(SystemExit) as exited:
        settings_or_exit("worker", {**GOOD, "CODAT_WEBHOOK_SECRETS": "whsec_!!!", "LOG_LEVEL": "x"})
    assert exited.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "worker: CODAT_WEBHOOK_SECRETS: entry 1 ('whsec_!!!') is not valid base64",
        "worker: LOG_LEVEL: must be one of CRITICAL, ERROR, WARNING, WARN, INFO, DEBUG, got 'x'",
    ]
    assert settings_or_exit("worker", GOOD).redis_url == GOOD["REDIS_URL"]


@pytest.fixture
def no_configuration(monkeypatch):
    for name in (*GOOD, "FLASK_APP"):
        monkeypatch.delenv(name, raising=False)


def test_flask_help_without_configuration_has_no_traceback(no_configuration):
    from click.testing import CliRunner

    result = CliRunner().invoke(flask_cli, ["--app", "app", "--help"], prog_name="flask")
    assert result.exit_code == 0
    assert "Traceback" not in result.output
    for group in ("companies", "deliveries", "jobs", "reconcile"):
        assert group in result.output


def test_a_flask_command_without_configuration_prints_the_problems_and_exits_2(
    no_configuration,
):
    from click.testing import CliRunner

    result = CliRunner().invoke(
        flask_cli, ["--app", "app", "deliveries", "list-dead"], prog_name="flask"
    )
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line]
    assert [line.split(":")[1].strip() for line in lines] == [
        "REDIS_URL",
        "API_TOKEN",
        "CODAT_WEBHOOK_SECRETS",
    ]
