"""The one typed, frozen configuration tree, loaded once at the edge.

Sources, strongest first: environment variables (prefix ``ARCHIVER_``, nested keys joined
by ``__``, e.g. ``ARCHIVER_DATABASE__URL``), then the TOML file (``--config PATH`` or
``ARCHIVER_CONFIG``), then the defaults below. An unknown key anywhere is an error that
names it: a typo must never silently become a default.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import rfc8785
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from archiver.errors import ConfigError

MiB = 1024 * 1024
GiB = 1024 * MiB


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Section):
    url: str | None = None
    """SQLAlchemy URL. Default: SQLite file ``<home>/archive.db``.
    For PostgreSQL: ``postgresql+psycopg://user@host:5432/dbname``."""


class SigningSettings(_Section):
    key_file: Path | None = None
    """Encrypted Ed25519 key (PKCS#8 PEM). Default: ``<home>/keys/signing-key.pem``."""
    passphrase: SecretStr | None = None
    """Prefer ``ARCHIVER_SIGNING__PASSPHRASE`` in the environment to writing it in a file."""
    passphrase_file: Path | None = None
    """A file holding the passphrase (one line), e.g. a container secret."""


def _default_user_agent() -> str:
    from archiver import __version__

    return f"evidence-archiver/{__version__}"


class CaptureSettings(_Section):
    allow_private_networks: bool = False
    """Allow loopback, private and link-local targets. Off: the SSRF guard refuses them."""
    timeout_seconds: float = Field(default=120.0, gt=0)
    max_redirects: int = Field(default=10, ge=0)
    max_response_bytes: int = Field(default=512 * MiB, gt=0)
    fetch_subresources: bool = True
    max_subresources: int = Field(default=300, ge=0)
    max_subresource_bytes: int = Field(default=100 * MiB, gt=0)
    max_total_bytes: int = Field(default=2 * GiB, gt=0)
    max_media_bytes: int = Field(default=2 * GiB, gt=0)
    """One media response (a video) on the wire; past it the download stops, recorded
    as truncated, and the media outcome says so."""
    verify_tls: bool = True
    ca_bundle: Path | None = None
    user_agent: str = Field(default_factory=_default_user_agent)


class LocalStoreSettings(_Section):
    kind: Literal["local"] = "local"
    path: Path | None = None
    """Default: ``<home>/blobs``."""


class S3StoreSettings(_Section):
    kind: Literal["s3"]
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    object_lock_days: int | None = Field(default=None, gt=0)
    """Object Lock retention in COMPLIANCE mode; the bucket must have Object Lock on."""
    multipart_threshold: int = Field(default=64 * MiB, ge=5 * MiB)
    multipart_chunksize: int = Field(default=16 * MiB, ge=5 * MiB)


StoreSettings = Annotated[LocalStoreSettings | S3StoreSettings, Field(discriminator="kind")]


class StorageSettings(_Section):
    stores: tuple[StoreSettings, ...] = (LocalStoreSettings(),)
    """A blob counts as stored only when every store here holds a verified copy."""


class LedgerSettings(_Section):
    origin: str | None = None
    """Checkpoint origin line. Default, fixed at ``archiver init``: ``<host>/evidence-archiver``."""
    checkpoint_after_capture: bool = True


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ARCHIVER_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    home: Path = Path("./archive-data")
    operator: str = Field(default_factory=lambda: f"{getpass.getuser()}@{socket.gethostname()}")
    """Who runs this archive; written into every WARC's warcinfo and every ledger entry."""
    database: DatabaseSettings = DatabaseSettings()
    signing: SigningSettings = SigningSettings()
    capture: CaptureSettings = CaptureSettings()
    storage: StorageSettings = StorageSettings()
    ledger: LedgerSettings = LedgerSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init kwargs (see load_settings); the environment wins.
        return (env_settings, init_settings)

    # Derived locations: one place decides where things live under ``home``.
    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.home_dir / 'archive.db'}"

    @property
    def key_file(self) -> Path:
        return self.signing.key_file or self.home_dir / "keys" / "signing-key.pem"

    @property
    def work_dir(self) -> Path:
        """Scratch space for captures in progress (same filesystem as the local store)."""
        return self.home_dir / "work"

    def local_store_path(self, store: LocalStoreSettings) -> Path:
        return (store.path or self.home_dir / "blobs").expanduser().resolve()

    def passphrase(self) -> bytes:
        """The signing-key passphrase. Raises :class:`ConfigError` if none is configured."""
        if self.signing.passphrase is not None:
            value = self.signing.passphrase.get_secret_value()
        elif self.signing.passphrase_file is not None:
            try:
                value = self.signing.passphrase_file.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(
                    f"cannot read signing.passphrase_file {self.signing.passphrase_file}: "
                    f"{exc.strerror}"
                ) from exc
        else:
            raise ConfigError(
                "no signing passphrase: set ARCHIVER_SIGNING__PASSPHRASE "
                "or signing.passphrase_file in the config"
            )
        if not value:
            raise ConfigError("the signing passphrase is empty")
        return value.encode("utf-8")

    def public_view(self) -> dict[str, Any]:
        """The effective configuration without secrets, as JSON-compatible data."""
        data = self.model_dump(mode="json", exclude={"signing": {"passphrase"}})
        return data

    def digest(self) -> str:
        """SHA-256 of the RFC 8785 form of :meth:`public_view` (recorded in every WARC)."""
        return hashlib.sha256(rfc8785.dumps(self.public_view())).hexdigest()


def load_settings(config_path: Path | None = None) -> Settings:
    """Load the configuration once. Raises :class:`ConfigError` naming the bad key."""
    env_path = os.environ.get("ARCHIVER_CONFIG")
    path = config_path or (Path(env_path) if env_path else None)
    file_values: dict[str, Any] = {}
    if path is not None:
        try:
            with path.open("rb") as handle:
                file_values = tomllib.load(handle)
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    _reject_unknown_environment()
    source = f"config file {path}" if path else "configuration"
    try:
        return Settings(**file_values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def _reject_unknown_environment() -> None:
    # pydantic-settings ignores ARCHIVER_* variables whose first part names no setting;
    # a misspelt ARCHIVER_HOEM must not silently leave the default in force.
    known = {name.upper() for name in Settings.model_fields} | {"CONFIG"}
    for name in os.environ:
        upper = name.upper()
        if upper.startswith("ARCHIVER_") and upper[9:].split("__")[0] not in known:
            raise ConfigError(f"unknown setting in environment variable {name}")


def _describe(exc: ValidationError, source: str) -> str:
    problems = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"] if not isinstance(part, int))
        key = key.replace(".local.", ".").replace(".s3.", ".")
        if error["type"] == "extra_forbidden":
            problems.append(f"unknown setting '{key}'")
        elif error["type"] == "missing":
            problems.append(f"missing setting '{key}'")
        else:
            problems.append(f"setting '{key}': {error['msg']}")
    return f"invalid {source}: " + "; ".join(problems)
