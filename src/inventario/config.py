"""Configuration from the environment, validated at start with clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from brownout import redact

__all__ = ["ConfigError", "Settings", "load_settings"]


class ConfigError(Exception):
    """The configuration is invalid; the message names every bad variable."""


class Settings(BaseSettings):
    """inventario's settings. Every field is an environment variable of the same name, upper-cased.

    Nothing is required: with no environment at all the service runs on an
    embedded SQLite database under ``VAR_DIR``, without cache, S3 (invoices
    stay in the local spool) or AI (rule-based fallbacks).
    """

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    var_dir: Path = Field(
        Path("var"), description="where local state lives (SQLite, outbox, spool)"
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default: sqlite+aiosqlite:///<VAR_DIR>/inventario.db"
    )
    redis_url: str | None = Field(None, description="redis://...; unset: no cache component")
    s3_endpoint_url: str | None = Field(None, description="S3 endpoint (MinIO, moto, AWS)")
    s3_bucket: str | None = Field(None, description="bucket for invoices; unset: spool only")
    s3_region: str = Field("us-east-1", description="S3 region")
    s3_access_key_id: str | None = Field(None, description="S3 access key id")
    s3_secret_access_key: SecretStr | None = Field(None, description="S3 secret key")
    openai_api_key: SecretStr | None = Field(None, description="unset: AI features off")
    openai_base_url: str | None = Field(None, description="an OpenAI-compatible endpoint")
    openai_model: str = Field("gpt-4o-mini", description="model for extraction and pricing")
    admin_token: SecretStr | None = Field(None, description="unset: no admin endpoints")
    invoice_max_bytes: int = Field(10 * 1024 * 1024, description="largest invoice upload")
    max_body_bytes: int = Field(
        1024 * 1024, description="largest JSON request body (bytes); larger ones get 413"
    )
    pricing_markup: float = Field(0.35, description="rule-based price: cost x (1 + markup)")
    pricing_monthly_inflation: float = Field(
        0.02, description="rule-based price grows by this per month since the last price change"
    )
    outbox_max_pending: int = Field(10_000, description="queued writes before answering 503")
    spool_max_bytes: int = Field(1024**3, description="bytes of spooled uploads before 507")
    heartbeat: float = Field(5.0, description="seconds between health evaluations and probes")
    recovery_dwell: float = Field(
        10.0, description="seconds a level (and its better condition) must hold before recovering"
    )
    shutdown_timeout: float = Field(
        30.0,
        description="on SIGTERM: seconds in-flight requests get to finish before they are "
        "cancelled (journals are then flushed; what is still queued stays in VAR_DIR)",
    )
    workers: int = Field(
        1,
        description="worker processes of `inventario serve` (uvicorn's supervisor); they "
        "share VAR_DIR, the listening socket and their breakers",
    )
    shed_max_in_flight: int = Field(
        16,
        description="requests in flight at which default requests are shed (sheddable ones "
        "from half of it; critical ones never)",
    )
    shed_critical_reserve: int | None = Field(
        None,
        description="in-flight slots over SHED_MAX_IN_FLIGHT that only critical requests "
        "take (default: half of SHED_MAX_IN_FLIGHT)",
    )
    shed_max_delay: float = Field(
        0.2,
        description="a standing event-loop queueing delay (seconds, the smallest over 1 s) "
        "counted as full load, as SHED_MAX_IN_FLIGHT",
    )
    shed_max_queue_wait: float = Field(
        0.5,
        description="seconds a default or sheddable request the load would shed waits for "
        "a slot before it is refused (0: refused at once)",
    )
    cache_read_wait: float = Field(
        0.02,
        description="seconds a product read waits for Redis before it reads the database "
        "(then, for a second, reads skip Redis and nothing is cached)",
    )
    cache_invalidate_wait: float = Field(
        0.02,
        description="seconds a write waits for Redis to delete the cache key it made stale; "
        "past it the key is recorded in the coherence journal (cached reads off until it is "
        "deleted) and the write is answered",
    )
    route_criticality: str | None = Field(
        None,
        description="per-route criticality overrides: 'METHOD /path/{param}=critical|default|"
        "sheddable', comma-separated",
    )
    host: str = Field("127.0.0.1", description="where `inventario serve` listens")
    port: int = Field(8000, description="where `inventario serve` listens")

    @field_validator("invoice_max_bytes", "max_body_bytes", "outbox_max_pending", "spool_max_bytes")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be >= 1")
        return value

    @field_validator("shed_max_in_flight")
    @classmethod
    def _max_in_flight(cls, value: int) -> int:
        if not 1 <= value <= 1_000_000:
            raise ValueError("must be between 1 and 1000000")
        return value

    @field_validator("shed_critical_reserve")
    @classmethod
    def _critical_reserve(cls, value: int | None) -> int | None:
        if value is not None and not 0 <= value <= 1_000_000:
            raise ValueError("must be between 0 and 1000000")
        return value

    @field_validator("shed_max_delay")
    @classmethod
    def _max_delay(cls, value: float) -> float:
        if not 0 < value <= 60:
            raise ValueError("must be > 0 and <= 60 seconds")
        return value

    @field_validator("shed_max_queue_wait")
    @classmethod
    def _max_queue_wait(cls, value: float) -> float:
        if not 0 <= value <= 60:  # NaN fails both
            raise ValueError("must be >= 0 and <= 60 seconds")
        return value

    @field_validator("cache_invalidate_wait", "cache_read_wait")
    @classmethod
    def _cache_invalidate_wait(cls, value: float) -> float:
        if not 0 <= value <= 60:  # NaN fails both
            raise ValueError("must be >= 0 and <= 60 seconds")
        return value

    @field_validator("route_criticality")
    @classmethod
    def _route_criticality(cls, value: str | None) -> str | None:
        from inventario.shedding import build_classifier, parse_routes

        build_classifier(parse_routes(value))  # raises ValueError naming the bad entry
        return value

    @field_validator("pricing_markup", "pricing_monthly_inflation")
    @classmethod
    def _rate(cls, value: float) -> float:
        if not 0 <= value <= 10:
            raise ValueError("must be between 0 and 10")
        return value

    @field_validator("shutdown_timeout")
    @classmethod
    def _shutdown_timeout(cls, value: float) -> float:
        if not 0 < value <= 3600:
            raise ValueError("must be > 0 and <= 3600 seconds")
        return value

    @field_validator("heartbeat")
    @classmethod
    def _heartbeat(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be > 0 seconds")
        return value

    @field_validator("recovery_dwell")
    @classmethod
    def _dwell(cls, value: float) -> float:
        if value < 0:
            raise ValueError("must be >= 0 seconds")
        return value

    @field_validator("workers")
    @classmethod
    def _workers(cls, value: int) -> int:
        if not 1 <= value <= 64:
            raise ValueError("must be between 1 and 64")
        return value

    @field_validator("port")
    @classmethod
    def _port(cls, value: int) -> int:
        if not 0 < value < 65536:
            raise ValueError("must be a TCP port (1-65535)")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme = urlsplit(value).scheme
        if not scheme.startswith(("postgresql", "postgres", "sqlite")):
            raise ValueError(f"must be a postgresql:// or sqlite:// URL (got scheme {scheme!r})")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("s3_endpoint_url", "openai_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _s3_complete(self) -> Settings:
        if self.s3_endpoint_url and not self.s3_bucket:
            raise ValueError("S3_ENDPOINT_URL is set but S3_BUCKET is not")
        return self

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.var_dir / 'inventario.db').resolve()}"

    def secrets(self) -> list[str]:
        """Every configured secret, for redaction."""
        out = []
        for secret in (self.s3_secret_access_key, self.openai_api_key, self.admin_token):
            if secret is not None:
                out.append(secret.get_secret_value())
        for url in (self.database_url, self.redis_url):
            if url:
                password = urlsplit(url).password
                if password:
                    out.append(password)
        return out

    def describe(self) -> dict[str, Any]:
        """The configuration as shown to people: secrets and URL passwords removed."""
        secrets = self.secrets()
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "***" if value.get_secret_value() else None
            elif isinstance(value, str):
                value = redact(value, *secrets)
            elif isinstance(value, Path):
                value = str(value)
            out[name] = value
        out["database"] = redact(self.effective_database_url, *secrets)
        return out


def load_settings(**overrides: Any) -> Settings:
    """Read the environment (and ``overrides``); raise ConfigError naming what is wrong."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = ".".join(str(part) for part in error["loc"]) or "configuration"
            lines.append(f"  {loc.upper()}: {error['msg']}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
