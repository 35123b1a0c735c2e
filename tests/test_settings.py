"""Settings from the environment: *_FILE secrets, rotation lists, and one clear line naming the
variable for each malformed value, never with a secret in it."""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hookpipe import cli, providers
from hookpipe.errors import SettingsError
from hookpipe.ingress.dreamclass import DreamClassSettings
from hookpipe.ingress.flexprice import FlexpriceSettings
from hookpipe.ingress.jodo import JodoSettings
from hookpipe.ingress.rapyd import RapydSettings
from hookpipe.providers import Provider
from hookpipe.settings import RetryPolicy, Settings, declarations, settings_table, to_env

SVIX_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
README = Path(__file__).resolve().parents[1] / "README.md"


def _provider(name: str) -> Provider:
    found = providers.get(name)
    assert found is not None
    return found


def test_an_empty_environment_gives_the_defaults() -> None:
    settings = Settings.from_env({})

    assert dataclasses.replace(settings, sections=()) == Settings()
    assert all(section == type(section)() for section in settings.sections)
    assert len(settings.sections) == len(providers.providers())
    assert settings.amqp_url == "amqp://guest:guest@127.0.0.1:5672/"
    assert settings.max_body_bytes == 1_048_576
    assert not any(provider.configured(settings) for provider in providers.providers().values())


@pytest.mark.parametrize(
    ("variable", "section"),
    [("HOOKPIPE_JODO_SECRET", JodoSettings), ("HOOKPIPE_DREAMCLASS_SECRET", DreamClassSettings)],
)
def test_a_secret_list_is_read_from_its_file(
    tmp_path: Path, variable: str, section: type[JodoSettings | DreamClassSettings]
) -> None:
    path = tmp_path / "secret"
    path.write_text("first-secret,second-secret\n")

    settings = Settings.from_env({f"{variable}_FILE": str(path)})

    assert settings.section(section).secrets == ("first-secret", "second-secret")


def test_single_secrets_are_read_from_their_files(tmp_path: Path) -> None:
    files = {
        "HOOKPIPE_RAPYD_ACCESS_KEY": "rak_from_file",
        "HOOKPIPE_RAPYD_SECRET_KEY": "rsk_from_file",
        "HOOKPIPE_DREAMCLASS_BASIC_AUTH": "dreamclass:pass word",
        "HOOKPIPE_DREAMCLASS_API_KEY": "api-key-from-file",
        "HOOKPIPE_FLEXPRICE_SECRET": SVIX_SECRET,
    }
    environ = {"HOOKPIPE_RAPYD_WEBHOOK_URL": "https://example.test/webhooks/rapyd"}
    for variable, value in files.items():
        path = tmp_path / variable
        path.write_text(value + "\n")
        environ[f"{variable}_FILE"] = str(path)

    settings = Settings.from_env(environ)

    rapyd = settings.section(RapydSettings)
    assert rapyd.access_key == "rak_from_file"
    assert rapyd.secret_key == "rsk_from_file"
    assert settings.section(DreamClassSettings).basic_auth == ("dreamclass", "pass word")
    assert settings.section(DreamClassSettings).api_key == "api-key-from-file"
    assert settings.section(FlexpriceSettings).secrets == (
        base64.b64decode(SVIX_SECRET.removeprefix("whsec_")),
    )
    assert _provider("rapyd").configured(settings)


def test_comma_separated_secrets_are_kept_in_order_for_rotation() -> None:
    other = "whsec_" + base64.b64encode(b"the next key").decode()
    settings = Settings.from_env(
        {
            "HOOKPIPE_JODO_SECRET": "new-secret, old-secret",
            "HOOKPIPE_DREAMCLASS_SECRET": "dc-new,dc-old",
            "HOOKPIPE_FLEXPRICE_SECRET": f"{other},{SVIX_SECRET}",
        }
    )

    assert settings.section(JodoSettings).secrets == ("new-secret", "old-secret")
    assert settings.section(DreamClassSettings).secrets == ("dc-new", "dc-old")
    assert settings.section(FlexpriceSettings).secrets == (
        b"the next key",
        base64.b64decode(SVIX_SECRET.removeprefix("whsec_")),
    )


def test_jodo_allow_list_reads_networks_and_single_addresses() -> None:
    settings = Settings.from_env(
        {"HOOKPIPE_JODO_ALLOWED_IPS": "10.0.0.0/8, 192.0.2.7,2001:db8::/32"}
    )

    assert settings.section(JodoSettings).allowed_ips == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.0.2.7/32"),
        ipaddress.ip_network("2001:db8::/32"),
    )


def test_rapyd_is_configured_only_with_both_keys_and_the_url() -> None:
    partial = Settings.from_env(
        {"HOOKPIPE_RAPYD_ACCESS_KEY": "rak", "HOOKPIPE_RAPYD_SECRET_KEY": "rsk"}
    )
    assert not _provider("rapyd").configured(partial)
    assert _provider("rapyd").missing(partial) == ("HOOKPIPE_RAPYD_WEBHOOK_URL",)


def test_a_value_and_its_file_both_set_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("from-file")

    with pytest.raises(SettingsError, match="HOOKPIPE_JODO_SECRET and HOOKPIPE_JODO_SECRET_FILE"):
        Settings.from_env(
            {"HOOKPIPE_JODO_SECRET": "inline", "HOOKPIPE_JODO_SECRET_FILE": str(path)}
        )


def test_an_unreadable_secret_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^HOOKPIPE_JODO_SECRET_FILE: cannot read"):
        Settings.from_env({"HOOKPIPE_JODO_SECRET_FILE": str(tmp_path / "missing")})


# (variable, malformed value, whether it holds a secret ("hunter2") the message must not show)
MALFORMED = [
    ("HOOKPIPE_AMQP_URL", "http://127.0.0.1:5672/", False),
    ("HOOKPIPE_AMQP_URL", "http://guest:hunter2-pw@127.0.0.1/", True),
    ("HOOKPIPE_AMQP_URL", "amqp://a:hunter2-pw@n1/,http://b:hunter2-pw@n2/", True),
    ("HOOKPIPE_LEDGER_URL", "mysql://root:hunter2-pw@db/ledger", True),
    ("HOOKPIPE_LOG_FORMAT", "xml", False),
    ("HOOKPIPE_LOG_LEVEL", "loud", False),
    ("HOOKPIPE_JODO_SECRET", "one,,two", True),
    ("HOOKPIPE_JODO_ALLOWED_IPS", "10.0.0.0/8,not-an-address", False),
    ("HOOKPIPE_DREAMCLASS_SECRET", "dc-secret,", True),
    ("HOOKPIPE_DREAMCLASS_SECRET_ENCODING", "hex", False),
    ("HOOKPIPE_DREAMCLASS_BASIC_AUTH", "no-colon-hunter2", True),
    ("HOOKPIPE_DREAMCLASS_API_URL", "ftp://dreamclass.example", False),
    ("HOOKPIPE_RAPYD_WEBHOOK_URL", "hooks.example.test/rapyd", False),
    ("HOOKPIPE_RAPYD_TOLERANCE", "five minutes", False),
    ("HOOKPIPE_FLEXPRICE_SECRET", "whsec_not*base64*hunter2", True),
    ("HOOKPIPE_FLEXPRICE_SECRET", "whsec_", False),
    ("HOOKPIPE_FLEXPRICE_TOLERANCE", "-1", False),
    ("HOOKPIPE_DECLARE_TOPOLOGY", "maybe", False),
    ("HOOKPIPE_MAX_BODY_BYTES", "1MB", False),
    ("HOOKPIPE_MAX_BODY_BYTES", "0", False),
    ("HOOKPIPE_PUBLISH_TIMEOUT", "0", False),
    ("HOOKPIPE_DELIVERY_LIMIT", "-3", False),
    ("HOOKPIPE_RETRY_DELAYS", "1,soon,30", False),
    ("HOOKPIPE_MAX_ATTEMPTS", "1.5", False),
    ("HOOKPIPE_RETRY_JITTER", "1.5", False),
    ("HOOKPIPE_WORKER_CONCURRENCY", "many", False),
    ("HOOKPIPE_WORKER_METRICS_PORT", "70000", False),
    ("HOOKPIPE_SHUTDOWN_GRACE", "-1", False),
]


@pytest.mark.parametrize(("variable", "value", "secret"), MALFORMED)
def test_a_malformed_value_is_one_line_naming_its_variable(
    variable: str, value: str, secret: bool
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})

    message = str(caught.value)
    assert message.startswith(f"{variable}: ") or message.startswith(f"{variable} ")
    assert "\n" not in message
    if secret:
        assert "hunter2" not in message


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("HOOKPIPE_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_the_cli_prints_one_line_and_exits_2_on_a_bad_setting(
    clean_environment: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_environment.setenv("HOOKPIPE_MAX_BODY_BYTES", "huge")

    code = cli.main(["ingress", "--port", "0"])

    assert code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("hookpipe: bad setting: HOOKPIPE_MAX_BODY_BYTES:")


def test_the_installed_command_exits_2_on_a_bad_secret_without_showing_it(
    clean_environment: pytest.MonkeyPatch,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKPIPE_")}
    env["HOOKPIPE_FLEXPRICE_SECRET"] = "whsec_hunter2!!"

    result = subprocess.run(
        [sys.executable, "-m", "hookpipe.cli", "ingress", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("hookpipe: bad setting: HOOKPIPE_FLEXPRICE_SECRET:")
    assert "hunter2" not in result.stderr


def test_the_readme_settings_table_is_the_declared_one() -> None:
    assert settings_table() in README.read_text(encoding="utf-8")


def test_every_setting_has_its_own_variable_and_help() -> None:
    names = [name for name, _, _ in declarations()]

    assert len(names) == len(set(names))
    assert all(name.startswith("HOOKPIPE_") for name in names)
    assert all(declaration.help for _, _, declaration in declarations())


def test_settings_written_to_the_environment_read_back_equal() -> None:
    settings = Settings.from_env(
        {
            "HOOKPIPE_JODO_SECRET": "one,two",
            "HOOKPIPE_JODO_ALLOWED_IPS": "10.0.0.0/8",
            "HOOKPIPE_DREAMCLASS_BASIC_AUTH": "user:pass",
            "HOOKPIPE_FLEXPRICE_SECRET": SVIX_SECRET,
            "HOOKPIPE_RETRY_DELAYS": "0.5,2",
            "HOOKPIPE_DECLARE_TOPOLOGY": "false",
        }
    )

    assert settings.retry == RetryPolicy(delays=(0.5, 2.0))
    assert settings.section(JodoSettings).secrets == ("one", "two")
    assert Settings.from_env(to_env(settings)) == settings
