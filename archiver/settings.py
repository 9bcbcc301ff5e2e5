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
import re
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import rfc8785
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from archiver.durations import parse_duration
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
    """Resources the page names (images, stylesheets, scripts, its <video> sources) that
    the capture fetches, counted once per URL across the page and media fetchers."""
    max_requests: int = Field(default=5000, ge=1)
    """Requests of the whole capture, every fetcher's (page, subresources, yt-dlp, page
    images, the browser), redirect hops and retries included; past it none is made."""
    deadline_seconds: float = Field(default=3600.0, gt=0)
    """The whole capture, every fetcher included, from its start: no request starts
    after it and a running one is cut (each fetcher's own time limit runs within it)."""
    max_subresource_bytes: int = Field(default=100 * MiB, gt=0)
    max_total_bytes: int = Field(default=2 * GiB, gt=0)
    max_media_bytes: int = Field(default=2 * GiB, gt=0)
    """One media response (a video) on the wire; past it the download stops, recorded
    as truncated, and the media outcome says so."""
    max_decoded_bytes: int = Field(default=2 * GiB, gt=0)
    """What one response body may decode to (Content-Encoding undone) for whatever reads
    it: media files, link extraction, the browser. The WARC keeps the bytes received."""
    max_decode_ratio: float = Field(default=100.0, ge=1)
    """Decoded bytes per byte received, past a body's first MiB: a decompression bomb
    (1 MB of gzip that inflates to 1 GiB) stops at about a megabyte."""
    verify_tls: bool = True
    ca_bundle: Path | None = None
    user_agent: str = Field(default_factory=_default_user_agent)
    concurrency: int = Field(default=0, ge=0, le=64)
    """Captures one process runs at once (``archiver capture URL…`` and each daemon
    worker), within ``daemon.per_host_concurrency`` and ``per_host_rate`` per host.
    0: what this machine can take (see :func:`archiver.capture.parallel.auto_concurrency`)."""
    lease_seconds: float = Field(default=60.0, gt=0)
    """A capture in flight holds a lease its process renews every ``lease_seconds / 4``;
    one not renewed for this long is closed as interrupted by the next command on any
    machine (on its own machine at once, when its process is gone)."""


class BrowserSettings(_Section):
    """The browser view of each capture: headless Chromium, every request recorded."""

    enabled: bool = True
    """Off: captures carry no screenshot, PDF or rendered DOM, and say so (skipped, disabled)."""
    executable: Path = Path("/usr/bin/chromium")
    """Chromium binary (Debian's package). Missing or failing to start: the capture goes on
    without the browser view and records why (skipped, browser-unavailable)."""
    timeout_seconds: float = Field(default=60.0, gt=0)
    """The whole browser phase, start to artifacts, within capture.timeout_seconds."""
    network_idle_seconds: float = Field(default=10.0, gt=0)
    """After the page's load event, how long to wait for no request in flight for 500 ms."""
    request_timeout_seconds: float = Field(default=20.0, gt=0)
    """One request of the browser (a long-poll or endless stream is cut there, unrecorded)."""
    max_requests: int = Field(default=2000, ge=1)
    """Requests one page may make; past them the browser's requests are refused (noted)."""
    max_scrolls: int = Field(default=20, ge=0)
    """Viewport-high scroll steps to load lazy content (0: no scrolling)."""
    viewport_width: int = Field(default=1280, ge=200, le=8192)
    viewport_height: int = Field(default=900, ge=200, le=8192)
    user_agent: str | None = None
    """Default: Chromium's own (headless) user agent."""
    pdf: bool = True
    """Also print the page to PDF (print layout, backgrounds included)."""
    recycle_after: int = Field(default=200, ge=1)
    """Captures one Chromium serves (each in a fresh, isolated context) before it is
    restarted; it is also restarted after a crash and when it passes ``max_memory_mib``."""
    max_memory_mib: int = Field(default=2048, ge=128)
    """Resident memory of Chromium and its children past which it is restarted (between
    captures, never in the middle of one)."""
    kill_memory_mib: int = Field(default=4096, ge=128)
    """Resident memory of Chromium and its children past which it is killed at once, in
    the middle of a capture too (checked twice a second while a capture uses it): that
    capture's browser view fails with reason ``browser-memory``."""

    @field_validator("user_agent")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        if value is not None and ("\r" in value or "\n" in value):
            raise ValueError("must be one line")
        return value


class MediaSettings(_Section):
    """The media fetcher: yt-dlp (and the page's images), recorded into the capture's WARC."""

    enabled: bool = True
    """Off: no yt-dlp extraction and no page images; a URL that is itself a video or an
    image is still downloaded (the page fetcher leaves such bodies to the media fetcher)."""
    timeout_seconds: float = Field(default=1800.0, gt=0)
    """Time budget of the media fetcher, counted from its start (not capture.timeout_seconds:
    a long video outlasts a page by far), within capture.deadline_seconds. A download
    still running then fails (timeout)."""
    max_items: int = Field(default=20, ge=1)
    """Videos and images kept from one post (a gallery, a playlist)."""
    cookies_file: Path | None = None
    """Netscape cookies.txt for sites that need a login. It is copied, never written to,
    and the cookies it holds are sent, so they are recorded in the WARC's requests."""
    proxy: str | None = None
    """Not supported (an error when set): see :meth:`_no_proxy`."""
    format: str = "bv*+ba/b"
    """yt-dlp format selection; the default (yt-dlp's own) takes the best video and the
    best audio, merged by ffmpeg on this machine, else the best single file."""
    write_subtitles: bool = True
    """Subtitles the uploader provided, every language (not automatic captions)."""
    write_thumbnails: bool = True
    frame_samples: int = Field(default=8, ge=0, le=64)
    """Frames of each video hashed with PDQ (evenly spaced); 0: no video hashes."""
    images: bool = True
    """Also keep the page's <img> images (at least ``min_image_side`` pixels each way)."""
    min_image_side: int = Field(default=100, ge=1)
    tool_memory_mib: int = Field(default=2048, ge=512)
    """Address space of each ffmpeg and ffprobe (probing, merging, frame sampling; those
    yt-dlp starts too); past it the program fails and the capture says why."""
    tool_timeout_seconds: float = Field(default=600.0, gt=0)
    """Wall time, and CPU time, of each ffmpeg and ffprobe; past it it is stopped."""

    @field_validator("proxy")
    @classmethod
    def _no_proxy(cls, value: str | None) -> str | None:
        # yt-dlp's traffic goes through the capture's recorder, which connects to the
        # target itself: the SSRF guard checks the address it connects to, and the WARC
        # records that address and the exact bytes. Through a proxy both would be the
        # proxy's, and the proxy could reach what the guard refuses. Refused, not ignored.
        if value is not None:
            raise ValueError(
                "not supported: media is fetched through the capture recorder, which "
                "connects to servers itself (SSRF guard, peer address, exact bytes); "
                "run the archiver on a machine with the vantage point you need instead"
            )
        return value


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


class TsaSettings(_Section):
    url: str = Field(pattern=r"^https?://")
    """The Time-Stamping Authority's RFC 3161 endpoint (HTTP POST, timestamp-query)."""
    ca_file: Path
    """PEM: the TSA's CA certificates (root, and intermediates if any). Tokens are checked
    against them before they are kept, and they travel with the tokens into bundles."""


class TimestampSettings(_Section):
    authorities: tuple[TsaSettings, ...] = ()
    """Every checkpoint gets an RFC 3161 token from each. None configured: no trusted time."""
    timeout_seconds: float = Field(default=10.0, gt=0)
    retry_after_seconds: float = Field(default=300.0, ge=0)
    """After a TSA failed, checkpoints made in this many seconds (after captures) do not ask
    it again; ``archiver ledger timestamp`` and exports always ask."""


def _duration(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else value


Seconds = Annotated[float, BeforeValidator(_duration), Field(gt=0)]
"""A duration: a number of seconds, or text such as ``"90s"``, ``"15m"``, ``"1h30m"``, ``"7d"``."""


class DaemonSettings(_Section):
    workers: int = Field(default=2, ge=0)
    """Worker processes ``archiver daemon`` runs; each runs up to ``capture.concurrency``
    captures at once, with one Chromium shared by them."""
    poll_threads: int = Field(default=8, ge=1)
    """Threads polling watched sources (listing posts; captures are the workers' job)."""
    drain_seconds: Seconds = 60.0
    """On SIGTERM, how long in-flight captures may take to finish before they are stopped."""
    lease_seconds: Seconds = 60.0
    """A running job whose worker sent no heartbeat for this long is run again."""
    idle_poll_seconds: Seconds = 1.0
    """How often an idle worker looks for a job."""
    sync_seconds: Seconds = 5.0
    """How soon the scheduler picks up watchlist changes made by other processes."""
    per_host_concurrency: int = Field(default=2, ge=1)
    """Captures running at once against one host, across every worker."""
    per_host_rate: float = Field(default=1.0, ge=0)
    """Captures started per second against one host, across every worker (0: no limit)."""
    max_attempts: int = Field(default=5, ge=1)
    retry_base_seconds: Seconds = 30.0
    """First retry delay of a capture that failed for a passing reason; doubles each time."""
    retry_max_seconds: Seconds = 3600.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "text"] = "auto"
    """``auto``: JSON lines when stderr is not a terminal, text when it is."""


class WatchSettings(_Section):
    default_every: Seconds = 900.0
    """How often a watch is polled unless ``watch add --every`` says otherwise."""
    min_every: Seconds = 60.0
    """The shortest polling interval a watch may have (protects the watched platforms)."""
    backfill: int = Field(default=20, ge=0)
    """On a watch's first poll, how many of the posts already there are captured."""
    max_pages: int = Field(default=3, ge=1)
    """Pages of a paginated source (outbox, author feed, channel preview) read per poll."""
    page_size: int = Field(default=50, ge=1, le=100)
    """Posts asked for per page where the source lets us choose (Bluesky)."""
    timeout_seconds: Seconds = 30.0
    max_listing_bytes: int = Field(default=16 * MiB, gt=0)
    """A listing (feed, outbox page, preview page) larger than this fails the poll."""
    bluesky_appview: str = "https://public.api.bsky.app"
    """Base URL of the public Bluesky AppView serving ``app.bsky.feed.getAuthorFeed``."""
    bluesky_web: str = "https://bsky.app"
    """Base URL of Bluesky's web pages; a post's URL is
    ``<bluesky_web>/profile/<handle>/post/<id>``."""


class RemovalMarker(_Section):
    """How one platform says a post is gone while answering 200: a page to match."""

    name: str
    final_url: str | None = None
    """Regular expression searched in the revisit's final URL (after redirects)."""
    body: str | None = None
    """Regular expression searched in the text of the revisit's final page (first MiB)."""

    @field_validator("final_url", "body")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from exc
        return value


class RevisitSettings(_Section):
    enabled: bool = True
    schedule: tuple[Seconds, ...] = (3600.0, 21600.0, 86400.0, 604800.0, 2592000.0)
    """When to revisit a captured post, counted from its capture (default 1h, 6h, 1d, 7d, 30d)."""
    queued: bool = True
    """Revisit investigators' queued captures too, not only what watches found."""
    check_seconds: Seconds = 30.0
    """How often the scheduler queues the revisits that are due."""
    removal_markers: tuple[RemovalMarker, ...] = ()


class AuditSettings(_Section):
    """Fixity audits: stored blobs re-read and re-hashed against the signed manifests."""

    every: Seconds = 7 * 86400.0
    """The daemon sees to it that every capture is audited at least this often."""
    sample: float = Field(default=1.0, gt=0, le=1)
    """Fraction of the captures one scheduled audit takes (those audited longest ago
    first); the daemon then audits every ``every * sample``, so the whole archive is
    covered within ``every``."""
    repair: bool = True
    """Replace a missing or damaged copy with a healthy copy from another store."""


class AuthSettings(_Section):
    """People signing in to the web application and the HTTP API (archiver.people)."""

    require_mfa: bool = False
    """Everyone needs a TOTP second factor (admins always do)."""
    min_password_length: int = Field(default=12, ge=8, le=1024)
    lockout_after: int = Field(default=10, ge=1)
    """Failed logins of one login name within ``lockout_minutes`` that lock it for
    ``lockout_minutes``."""
    lockout_minutes: float = Field(default=15.0, gt=0)
    client_failures_per_minute: int = Field(default=20, ge=1)
    """Failed logins (and unknown tokens) from one client address in the last minute
    past which its further attempts are refused unchecked (reason rate-limited)."""
    token_days: float = Field(default=90.0, gt=0)
    """Lifetime of an API token unless ``token create --expires`` says otherwise."""
    session_idle_minutes: float = Field(default=30.0, gt=0)
    """A web session unused this long ends."""
    session_absolute_hours: float = Field(default=12.0, gt=0)
    """A web session ends this long after its login, however busy."""


class WebSettings(_Section):
    """How ``archiver serve`` serves the HTTP API (its options override these)."""

    host: str = "127.0.0.1"
    """The address to listen on. Anything but loopback needs TLS files or behind_proxy."""
    port: int = Field(default=8000, ge=0, le=65535)
    behind_proxy: bool = False
    """A reverse proxy terminates TLS in front of the server: X-Forwarded-For and
    X-Forwarded-Proto are honoured from trusted_proxies only."""
    trusted_proxies: list[str] = Field(default_factory=list)
    """Addresses or networks of the reverse proxies (default with behind_proxy: loopback)."""
    tls_cert: Path | None = None
    """PEM certificate chain; with tls_key, the server speaks HTTPS itself."""
    tls_key: Path | None = None
    insecure_http: bool = False
    """Plain HTTP, on loopback only (session cookies then lack Secure): for a laptop."""
    replay_port: int | None = Field(default=None, ge=0, le=65535)
    """The port of the replay origin (archived pages replayed; default: port + 1)."""
    app_origin: str | None = None
    """The origin browsers use for the app, e.g. https://archive.example.org (needed off
    loopback: only it may frame the replay origin; default: the address served on)."""
    replay_origin: str | None = None
    """The origin browsers use for the replay port: another origin of the app's site,
    e.g. https://replay.archive.example.org behind a proxy (default on loopback: the
    app's host with replay_port)."""
    assets_dir: Path | None = None
    """The node_modules directory of the browser code the app serves (ReplayWeb.page,
    htmx; default: the one beside the project's pyproject.toml)."""

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        import ipaddress

        for address in value:
            try:
                ipaddress.ip_network(address, strict=False)
            except ValueError:
                raise ValueError(f"not an IP address or network: {address!r}") from None
        return value


def _default_operator() -> str:
    return f"os:{getpass.getuser()}@{socket.gethostname()}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ARCHIVER_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    home: Path = Path("./archive-data")
    operator: str = Field(default_factory=_default_operator)
    """Who runs this archive from the command line: ``os:<account>@<host>`` by default
    (labelled as an OS account, unlike the ``user:<login>`` of people signed in to the
    web application); written into every WARC's warcinfo and the CLI's ledger entries."""
    database: DatabaseSettings = DatabaseSettings()
    signing: SigningSettings = SigningSettings()
    capture: CaptureSettings = CaptureSettings()
    browser: BrowserSettings = BrowserSettings()
    media: MediaSettings = MediaSettings()
    storage: StorageSettings = StorageSettings()
    ledger: LedgerSettings = LedgerSettings()
    timestamp: TimestampSettings = TimestampSettings()
    daemon: DaemonSettings = DaemonSettings()
    watch: WatchSettings = WatchSettings()
    revisit: RevisitSettings = RevisitSettings()
    audit: AuditSettings = AuditSettings()
    auth: AuthSettings = AuthSettings()
    web: WebSettings = WebSettings()

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
