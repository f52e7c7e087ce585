"""One Settings object, read from environment variables with the prefix CONCORD_."""

from functools import cached_property
from pathlib import Path
from typing import Literal

from platformdirs import user_data_path
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DataDirUnusable(Exception):
    """The data dir cannot be created or written: the CLI says so in one line, never a traceback."""


def default_data_dir() -> Path:
    """A per-user folder (Linux: ~/.local/share/concord), so that every command finds the same data from
    any working directory."""
    return user_data_path("concord", appauthor=False)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONCORD_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str = ""
    secret_cookie_secure: bool = False
    session_hours: float = 12.0
    washout_days_default: int = 14
    max_upload_bytes: int = 512 * 1024 * 1024
    max_patch_pixels: int = 64_000_000
    max_tiff_pixels: int = 4_000_000_000
    raw_cache_max_pixels: int = 64_000_000
    max_json_objects: int = 20_000
    heartbeat_idle_seconds: float = 60.0
    tile_cache_bytes: int = 128 * 1024 * 1024
    open_file_cache: int = 32
    tile_grant_seconds: int = Field(default=900, ge=60)
    tile_grant_secret: str = ""
    argon2_time_cost: int = 2
    argon2_memory_kib: int = 19_456
    token_days: int = 90
    login_window_seconds: int = 900
    login_max_failures_per_account: int = 10
    login_max_failures_per_address: int = 50
    forwarded_allow_ips: str = ""
    hsts_seconds: int = 31_536_000
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    metrics_enabled: bool = True
    metrics_token: str = ""
    storage_url: str = ""
    storage_endpoint: str = ""
    storage_region: str = ""
    storage_cache_bytes: int = 10 * 1024**3

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'concord.db').resolve()}"

    @property
    def image_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def model_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def trusted_proxies(self) -> list[str]:
        """Addresses (or CIDR networks, or "*") whose X-Forwarded-For and X-Forwarded-Proto are believed."""
        return [item.strip() for item in self.forwarded_allow_ips.split(",") if item.strip()]

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")


def get_settings() -> Settings:
    return Settings()
