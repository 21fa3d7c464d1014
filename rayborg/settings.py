"""One settings object: defaults < TOML config file < RAYBORG_* environment variables < CLI flags."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings import SettingsError as EnvParseError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from rayborg.store.engine import default_database_url

CONFIG_ENV = "RAYBORG_CONFIG"
URL_FORMS = "sqlite:///PATH or postgresql://USER@HOST/DB"


def default_config_path() -> Path:
    from platformdirs import user_config_dir

    return Path(user_config_dir("rayborg")) / "rayborg.toml"


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or default_config_path())


class KeystoneOptions(BaseModel):
    """keystoneauth1 password-plugin options for a service user (Placement, Nova, Glance, tokens)."""

    auth_url: str | None = None
    username: str | None = None
    password: str | None = None
    project_name: str | None = None
    user_domain_id: str = "default"
    project_domain_id: str = "default"
    region_name: str | None = None
    token: str | None = None  # a fixed admin token, e.g. Placement's noauth2 "admin"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAYBORG_", env_nested_delimiter="__", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 6666
    database_url: str = Field(default_factory=default_database_url)
    # Base URL that links and version documents carry, e.g. https://cloud.example/accelerator.
    # Unset: built from the request's Host and X-Forwarded-* headers.
    public_url: str | None = None
    auth_strategy: Literal["noauth", "keystone"] = "noauth"
    keystone: KeystoneOptions = Field(default_factory=KeystoneOptions)
    # Roles in X-Service-Roles that make a request a service request (keystonemiddleware's default).
    service_token_roles: list[str] = Field(default_factory=lambda: ["service"])
    token_cache_seconds: int = 300
    policy_file: str | None = None
    max_body_bytes: int = 1024 * 1024
    # Input limits (issue 14). A profile group's `resources:RC` amount is 1..max_group_amount; all the
    # amounts of a profile add up to at most max_profile_amount (the ARQs one POST creates).
    max_group_amount: int = Field(default=64, ge=1)
    max_profile_amount: int = Field(default=128, ge=1)
    # Slow clients: seconds to receive a request's headers, and its body; connections served at once
    # (further ones wait in the kernel's backlog until one closes).
    header_timeout: float = Field(default=10.0, gt=0)
    body_timeout: float = Field(default=30.0, gt=0)
    max_connections: int = Field(default=1000, ge=1)
    # GET /metrics answers anyone (as Prometheus targets usually do); false: callers the `admin_api`
    # policy rule allows only.
    metrics_public: bool = True
    api_workers: int = 1
    sysfs_root: str = "/sys"
    dev_root: str = "/dev"
    enabled_drivers: list[str] | None = None
    # Options per driver name, plus "bitstreams" (where image ids are fetched from: {"dir": ...} or
    # {"glance_url": ..., ...}) and "hotplug". TOML: [rayborg.driver_options.nvidia_vgpu]; env:
    # RAYBORG_DRIVER_OPTIONS='{"spdk": {"socket": "/run/spdk.sock"}}' (JSON), or one driver's
    # RAYBORG_DRIVER_OPTIONS__SPDK='{"socket": ...}', or one key's RAYBORG_DRIVER_OPTIONS__SPDK__SOCKET=...
    # (a string: drivers parse their options from strings too).
    driver_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    report_interval: float = 60.0
    # One binder keeps the store busy on 2 cores: measured with bench/writes.py's bind burst, SQLite
    # 1,078 binds/s with one and 1,093 with two; PostgreSQL 636 with one and 481 with two (the
    # binders' claims skip each other's locked handles and retry). A second one also costs ~80 MiB.
    binder_count: int = Field(default=1, ge=1)
    placement_url: str | None = None
    placement_token: str | None = "admin"   # a fixed token (Placement's noauth2) when no Keystone
    nova_url: str | None = None
    nova_token: str | None = None
    # Ray: "local" starts a single-node Ray in this process; "auto" or host:port joins a cluster.
    ray_address: str = "local"
    ray_dashboard: bool = True
    # Simulated devices on every host (fake driver spec, e.g. "fpga:4,gpu:2"), for demos and tests.
    fake_devices: str | None = None
    # Run the Ray actors (HostAgents, PlacementSync, binders); off: API and store only.
    actors: bool = True
    log_level: str = "INFO"

    def resolved_driver_options(self) -> dict[str, dict[str, Any]]:
        """driver_options as the drivers get them: a Glance bitstream source that names no
        credentials of its own ("auth_url" or "token") uses the [keystone] service user, the one
        Placement and Nova calls use, so an operator configures that user once."""
        options = {name: dict(values) for name, values in self.driver_options.items()}
        source = options.get("bitstreams") or {}
        if source.get("glance_url") and not (source.get("auth_url") or source.get("token")) \
                and self.keystone.auth_url:
            options["bitstreams"] = self.keystone.model_dump(exclude_none=True) | source
        return options

    @field_validator("database_url")
    @classmethod
    def _database_url_parses(cls, url: str) -> str:
        try:
            name = make_url(url).get_backend_name()
        except ArgumentError:
            raise ValueError(f"not a database URL: {url!r} ({URL_FORMS})") from None
        if name not in ("sqlite", "postgresql", "postgres"):
            raise ValueError(f"unsupported database {name!r}: use {URL_FORMS}")
        return url

    @field_validator("driver_options")
    @classmethod
    def _known_option_sections(cls, options: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        # a misspelt driver name would otherwise be ignored without a word
        from rayborg.drivers.registry import check_option_sections

        check_option_sections(options)
        return options

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        return (init_settings, env_settings, TomlFileSource(settings_cls))


class TomlFileSource(PydanticBaseSettingsSource):
    """Reads `$RAYBORG_CONFIG` or the user's config dir `rayborg.toml`; a `[rayborg]` table or top level."""

    def get_field_value(self, field, field_name):  # pragma: no cover - unused, __call__ does it all
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = config_path()
        if not path.is_file():
            return {}
        data = tomllib.loads(path.read_text())
        return data.get("rayborg", data)


class SettingsError(ValueError):
    """The config file or a RAYBORG_* variable is unreadable or invalid (one readable line)."""


def load_settings(**overrides: Any) -> Settings:
    """Settings with CLI flags (those not None) taking precedence over env and file."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {config_path()}: {exc}") from None
    except OSError as exc:
        raise SettingsError(f"config file {config_path()}: {exc.strerror or exc}") from None
    except EnvParseError as exc:  # a RAYBORG_* variable that should hold JSON does not
        cause = f" ({exc.__cause__})" if exc.__cause__ else ""
        raise SettingsError(f"invalid settings: {exc}{cause}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
                             for e in exc.errors())
        raise SettingsError(f"invalid settings: {problems}") from None
