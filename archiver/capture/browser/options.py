"""The browser fetcher's options (``[browser]`` in the configuration), as a frozen value."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from archiver.settings import BrowserSettings


@dataclass(frozen=True, slots=True, kw_only=True)
class BrowserOptions:
    """See ``BrowserSettings`` in :mod:`archiver.settings` for each option's meaning."""

    enabled: bool = True
    executable: Path = Path("/usr/bin/chromium")
    timeout_seconds: float = 60.0
    network_idle_seconds: float = 10.0
    request_timeout_seconds: float = 20.0
    max_requests: int = 2000
    max_scrolls: int = 20
    viewport_width: int = 1280
    viewport_height: int = 900
    user_agent: str | None = None
    pdf: bool = True
    recycle_after: int = 200
    max_memory_mib: int = 2048
    kill_memory_mib: int = 4096
    defer_media: bool = False
    """A <video>/<audio> the page loads is not fetched for the view but handed to the
    media fetcher, which downloads it once (set when the media fetcher runs)."""

    def __post_init__(self) -> None:
        for name in ("timeout_seconds", "network_idle_seconds", "request_timeout_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.max_scrolls < 0:
            raise ValueError("max_scrolls must be >= 0")
        if self.max_requests < 1:
            raise ValueError("max_requests must be >= 1")
        if self.viewport_width <= 0 or self.viewport_height <= 0:
            raise ValueError("the viewport must have a positive size")
        if self.recycle_after < 1 or self.max_memory_mib < 1 or self.kill_memory_mib < 1:
            raise ValueError("recycle_after, max_memory_mib and kill_memory_mib must be >= 1")

    @classmethod
    def from_settings(cls, settings: BrowserSettings, *,
                      defer_media: bool = False) -> BrowserOptions:
        return cls(**settings.model_dump(), defer_media=defer_media)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["executable"] = str(self.executable)
        return data
