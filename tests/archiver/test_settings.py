"""Configuration: TOML file, environment overrides, and unknown keys named."""

from __future__ import annotations

from pathlib import Path

import pytest

from archiver.errors import ConfigError
from archiver.settings import LocalStoreSettings, S3StoreSettings, load_settings

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.upper().startswith("ARCHIVER_"):
            monkeypatch.delenv(name)


def test_defaults_are_the_embedded_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.home_dir == tmp_path / "archive-data"
    assert settings.database_url == f"sqlite:///{tmp_path / 'archive-data' / 'archive.db'}"
    assert settings.key_file == tmp_path / "archive-data" / "keys" / "signing-key.pem"
    assert settings.storage.stores == (LocalStoreSettings(),)
    assert settings.capture.allow_private_networks is False


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.toml"
    config.write_text('home = "/from/file"\n[capture]\ntimeout_seconds = 5\n'
                      '[database]\nurl = "sqlite:///file.db"\n')
    monkeypatch.setenv("ARCHIVER_CONFIG", str(config))
    monkeypatch.setenv("ARCHIVER_HOME", str(tmp_path / "from-env"))
    monkeypatch.setenv("ARCHIVER_DATABASE__URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("ARCHIVER_CAPTURE__ALLOW_PRIVATE_NETWORKS", "true")
    monkeypatch.setenv("ARCHIVER_STORAGE__STORES", '[{"kind": "s3", "bucket": "b"}]')
    settings = load_settings()
    assert settings.home_dir == tmp_path / "from-env"
    assert settings.database_url == "postgresql+psycopg://u@h/db"
    assert settings.capture.allow_private_networks is True
    assert settings.capture.timeout_seconds == 5
    assert settings.storage.stores == (S3StoreSettings(kind="s3", bucket="b"),)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            "[capture]\nalow_private_networks = true\n",
            "unknown setting 'capture.alow_private_networks'",
        ),
        ("colour = 'blue'\n", "unknown setting 'colour'"),
        ("[capture]\nmax_redirects = -1\n", "setting 'capture.max_redirects'"),
        ("[storage]\nstores = [{ kind = 's3' }]\n", "missing setting 'storage.stores.bucket'"),
        (
            "[storage]\nstores = [{ kind = 'local', pth = 'x' }]\n",
            "unknown setting 'storage.stores.pth'",
        ),
        ("home = \n", "is not valid TOML"),
    ],
)
def test_bad_config_file_names_the_key(tmp_path: Path, toml: str, message: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_settings(config)


def test_unknown_environment_variables_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCHIVER_CAPTURE__BOGUS", "1")
    with pytest.raises(ConfigError, match=r"unknown setting 'capture\.bogus'"):
        load_settings()
    monkeypatch.delenv("ARCHIVER_CAPTURE__BOGUS")
    monkeypatch.setenv("ARCHIVER_HOEM", "/x")
    with pytest.raises(ConfigError, match="environment variable ARCHIVER_HOEM"):
        load_settings()


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file .*nope\.toml does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_passphrase_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="no signing passphrase"):
        load_settings().passphrase()
    secret = tmp_path / "pp"
    secret.write_text("from-file\n")
    monkeypatch.setenv("ARCHIVER_SIGNING__PASSPHRASE_FILE", str(secret))
    assert load_settings().passphrase() == b"from-file"
    monkeypatch.setenv("ARCHIVER_SIGNING__PASSPHRASE", "from-env")
    settings = load_settings()
    assert settings.passphrase() == b"from-env"
    assert "from-env" not in repr(settings)
    assert "from-env" not in str(settings.public_view())


@pytest.mark.parametrize("name", ["default.toml", "single-machine.toml", "postgres-s3.toml"])
def test_shipped_configs_load(name: str) -> None:
    settings = load_settings(CONFIG_DIR / name)
    assert settings.storage.stores


def test_config_digest_changes_with_options_not_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    base = load_settings().digest()
    monkeypatch.setenv("ARCHIVER_SIGNING__PASSPHRASE", "secret")
    assert load_settings().digest() == base
    monkeypatch.setenv("ARCHIVER_CAPTURE__MAX_REDIRECTS", "3")
    assert load_settings().digest() != base
