"""One settings object: defaults < TOML config file < RAYBORG_* environment variables < CLI flags."""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings import SettingsError as EnvParseError

from rayborg import logs
from rayborg.store.engine import default_database_url

ENV_PREFIX = "RAYBORG_"
CONFIG_ENV = "RAYBORG_CONFIG"
URL_FORMS = "sqlite:///PATH or postgresql://USER@HOST/DB"
# RAYBORG_* variables that are not settings. Any other RAYBORG_* name must be a setting: a misspelt
# one would otherwise be ignored without a word. The CLI exports the first two to the processes
# `serve` starts (front doors get their settings as JSON, actors a RuntimeConfig: neither reads
# settings from the environment again); the others belong to the test suite and bench/, so a
# developer's shell that sets them still runs rayborg (tests/cli/test_strict_settings.py finds any
# RAYBORG_* name the repository uses that is neither a setting nor listed here).
OTHER_VARIABLES = (CONFIG_ENV, logs.ENV, "RAYBORG_SERVICE_CACHE", "RAYBORG_BENCH_CYBORG_VENV")


class SettingsError(ValueError):
    """The config file or a RAYBORG_* variable is unreadable or invalid (one readable line)."""


def default_config_path() -> Path:
    from platformdirs import user_config_dir

    return Path(user_config_dir("rayborg")) / "rayborg.toml"


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or default_config_path())


def _closest(name: str, valid: list[str]) -> str:
    return f" (did you mean {difflib.get_close_matches(name, valid, n=1, cutoff=0)[0]!r}?)" if valid else ""


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (`KeystoneOptions`, `KeystoneOptions | None`), else None."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _is_mapping(annotation: Any) -> bool:
    """A dict field (driver_options): its keys are checked by its own validator, not here."""
    return any(get_origin(a) is dict for a in (annotation, *get_args(annotation)))


def unknown_keys(model: type[BaseModel], table: Mapping[str, Any], where: str = "") -> Iterator[str]:
    """Each key of a config table (and of its nested tables such as [keystone]) that `model` lacks,
    as `'key' (did you mean 'closest'?)`."""
    for key, value in table.items():
        field = model.model_fields.get(key)
        if field is None:
            name = where + key
            yield f"unknown key {name!r}" + _closest(name, [where + k for k in model.model_fields])
        elif (sub := _model_of(field.annotation)) is not None and isinstance(value, Mapping):
            yield from unknown_keys(sub, value, f"{where}{key}.")


def unknown_variables(model: type[BaseModel], environ: Mapping[str, str]) -> Iterator[str]:
    """Each RAYBORG_* variable that names no setting: RAYBORG_<FIELD>, RAYBORG_<MODEL>__<FIELD>
    (e.g. RAYBORG_KEYSTONE__AUTH_URL) and RAYBORG_<DICT>__<ANY>[__<ANY>...] are settings; names are
    matched without regard to case, as pydantic-settings reads them."""
    valid = list(OTHER_VARIABLES)
    for name, field in model.model_fields.items():
        valid.append(f"{ENV_PREFIX}{name.upper()}")
        if (sub := _model_of(field.annotation)) is not None:
            valid += [f"{ENV_PREFIX}{name.upper()}__{k.upper()}" for k in sub.model_fields]
    for variable in environ:
        upper = variable.upper()
        if not upper.startswith(ENV_PREFIX) or upper in valid:
            continue
        head, nested, _ = upper[len(ENV_PREFIX):].partition("__")
        field = model.model_fields.get(head.lower())
        if nested and field is not None and _is_mapping(field.annotation):
            continue
        yield f"unknown environment variable {variable}" + _closest(upper, valid)


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


class UnifiedLimitsOptions(BaseModel):
    """Keystone mode's quota limits from Keystone's unified limits (oslo.limit), read with the
    [keystone] service user's system-scoped token (it needs `reader` on the system): registered
    limits of the accelerator service named `class:<RC>` (as Nova names them), project limits
    overriding them; a class with neither is unlimited. Off: the [quota] table."""

    enabled: bool = False
    endpoint_id: str | None = None  # the accelerator endpoint whose limits apply; else by service type
    service_type: str = "accelerator"
    region_name: str | None = None
    cache_seconds: float = Field(default=5.0, ge=0)  # a project's limits are read again after this


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
    # oslo.policy's [oslo_policy] options: the new defaults alone (no legacy rule ORed in), and each
    # rule's scope types (system vs project tokens) checked. Both off, as upstream Cyborg ships.
    enforce_new_defaults: bool = False
    enforce_scope: bool = False
    max_body_bytes: int = 1024 * 1024
    # Input limits (issue 14). A profile group's `resources:RC` amount is 1..max_group_amount; all the
    # amounts of a profile add up to at most max_profile_amount (the ARQs one POST creates).
    max_group_amount: int = Field(default=64, ge=1)
    max_profile_amount: int = Field(default=128, ge=1)
    # Quota limits (keystone mode with [unified_limits] enabled: Keystone's instead), counted at bind: units
    # of a resource class a project may hold, -1 unlimited. `[quota] default = -1` and one key per
    # resource class, e.g. `FPGA = 4`; env RAYBORG_QUOTA__FPGA=4.
    quota: dict[str, int] = Field(default_factory=dict)
    unified_limits: UnifiedLimitsOptions = Field(default_factory=UnifiedLimitsOptions)
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
    # PATCH /v2/deployables/{uuid}/program answers once programming ends (the updated deployable, or
    # the error) if that takes at most this many seconds; later, 202 and the outcome in the
    # deployable's program_* fields. Intel/Xilinx tools take 10-60 s for a full image.
    program_wait: float = Field(default=120.0, ge=0)
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
    # What a local Ray head runs beside the actors (rayborg/ray_head.py): the dashboard modules ("all":
    # every one Ray has; the default serves the Actors page and `ray list actors`), Ray's autoscaler
    # monitor and its log monitor (rayborg uses neither; ~50 MiB each).
    ray_dashboard_modules: str = "NodeHead,StateHead"
    ray_autoscaler_monitor: bool = False
    ray_log_monitor: bool = False
    # The dashboard (with a list of modules) in its own process instead of a thread of `rayborg serve`.
    ray_dashboard_process: bool = False
    # MALLOC_CONF of a local head's GCS and raylet (rayborg/ray_head.py JEMALLOC_CONF); "": Ray's default.
    ray_jemalloc_conf: str = "narenas:1,tcache:false,dirty_decay_ms:0,muzzy_decay_ms:0"
    # Simulated devices on every host (fake driver spec, e.g. "fpga:4,gpu:2"), for demos and tests.
    fake_devices: str | None = None
    # Run the Ray actors (HostAgents, PlacementSync, binders); off: API and store only.
    actors: bool = True
    # One more front door beside the daemon holding the database's lease, on its Ray cluster: no lease,
    # no supervisor until that daemon is gone, then it takes over (rayborg/join.py).
    join: bool = False
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

    def check_noauth_exposure(self) -> str | None:
        """noauth trusts the identity headers and makes a caller without them an admin: fine on
        loopback, an open door anywhere else. Beyond loopback, raise SettingsError unless noauth was
        asked for explicitly (flag, RAYBORG_AUTH_STRATEGY or the file); then return the warning to log."""
        if self.auth_strategy != "noauth":
            return None
        why = exposure(self.host)
        if why is None:
            return None
        if "auth_strategy" not in self.model_fields_set:
            raise SettingsError(
                f"refusing to start: --host {self.host} {why}, and auth_strategy noauth (the default) makes "
                "every caller an admin; listen on 127.0.0.1, use --auth-strategy keystone, or ask for noauth "
                "explicitly (--auth-strategy noauth, RAYBORG_AUTH_STRATEGY=noauth or auth_strategy in the "
                "config file)")
        return (f"auth_strategy noauth on {self.host}, which {why}: every caller that reaches it is trusted "
                "by the X-User-Id/X-Project-Id/X-Roles headers it sends, and one without them is an admin")

    @field_validator("database_url")
    @classmethod
    def _database_url_parses(cls, url: str) -> str:
        from rayborg.store.urls import backend_name

        try:
            name = backend_name(url)
        except ValueError as exc:
            raise ValueError(f"{exc} ({URL_FORMS})") from None
        if name not in ("sqlite", "postgresql", "postgres"):
            raise ValueError(f"unsupported database {name!r}: use {URL_FORMS}")
        return url

    @field_validator("quota")
    @classmethod
    def _quota_limits(cls, table: dict[str, int]) -> dict[str, int]:
        # resource classes are upper case; environment variable names arrive lower-cased
        limits = {"default" if key.lower() == "default" else key.upper(): limit for key, limit in table.items()}
        for key, limit in limits.items():
            if key != "default" and not re.fullmatch(r"[A-Z0-9_]+", key):
                raise ValueError(f"{key!r} is neither 'default' nor a resource class (e.g. FPGA, CUSTOM_QAT)")
            if limit < -1:
                raise ValueError(f"{key} = {limit}: a limit is -1 (unlimited) or more")
        return limits

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
        return (init_settings, EnvironmentCheck(settings_cls), env_settings, TomlFileSource(settings_cls))


def exposure(host: str) -> str | None:
    """Why listening on `host` reaches beyond this machine (None: every address it names is loopback).
    A name counts by every address it resolves to; one that does not resolve counts as exposed."""
    bare = host.strip().strip("[]")
    try:
        addresses = [ipaddress.ip_address(bare)]
    except ValueError:
        if not bare:
            return "listens on every interface"
        try:
            infos = socket.getaddrinfo(bare, None, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError):
            return "does not resolve to a loopback address"
        addresses = [ipaddress.ip_address(info[4][0].partition("%")[0]) for info in infos]
    if any(a.is_unspecified for a in addresses):
        return "listens on every interface"
    # ::ffff:127.0.0.1 is loopback, though Python 3.11's is_loopback says otherwise
    unmapped = [getattr(a, "ipv4_mapped", None) or a for a in addresses]
    if addresses and all(a.is_loopback for a in unmapped):
        return None
    return "is not a loopback address"


class EnvironmentCheck(PydanticBaseSettingsSource):
    """Contributes nothing: refuses RAYBORG_* variables that name no setting (see OTHER_VARIABLES)."""

    def get_field_value(self, field, field_name):  # pragma: no cover - unused, __call__ does it all
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        problems = list(unknown_variables(self.settings_cls, os.environ))
        if problems:
            raise SettingsError("; ".join(problems))
        return {}


class TomlFileSource(PydanticBaseSettingsSource):
    """Reads `$RAYBORG_CONFIG` or the user's config dir `rayborg.toml`; a `[rayborg]` table or top
    level. Only the default file may be missing; every key must name a setting."""

    def get_field_value(self, field, field_name):  # pragma: no cover - unused, __call__ does it all
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = config_path()
        if not path.exists():
            if os.environ.get(CONFIG_ENV):  # named by --config or $RAYBORG_CONFIG: a typo, not "no file"
                raise SettingsError(f"config file {path} does not exist")
            return {}
        data = tomllib.loads(path.read_text())
        table, where = data, ""
        if isinstance(data.get("rayborg"), dict):
            table, where = data["rayborg"], "rayborg."
            problems = [f"key {k!r} is outside the [rayborg] table" for k in data if k != "rayborg"]
        else:
            problems = []
        problems += unknown_keys(self.settings_cls, table, where)
        if problems:
            raise SettingsError(f"config file {path}: {'; '.join(problems)}")
        return table


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
