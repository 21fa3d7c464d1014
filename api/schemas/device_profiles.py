"""Device profile bodies: the POST request (with the group syntax rules) and the responses."""

from __future__ import annotations

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from rayborg.api.schemas.common import Link, Strict
from rayborg.drivers.base import valid_resource_class, valid_trait
from rayborg.store.arq_state import AmountLimits, amounts_error

NAME_PATTERN = r"^[a-zA-Z0-9-_]+$"
KEY_PREFIXES = ("resources:", "trait:", "accel:")
# Cyborg's resource classes that Placement does not define (it accepts them; so do we, beside the
# os-resource-classes standards and CUSTOM_ names).
CYBORG_RCS = frozenset({"GPU"})
TRAIT_VALUES = ("required", "forbidden")
ATTACH_TARGETS = ("VM", "host", "none")
# accel: keys whose value names something (an image, a function): empty names nothing.
NAMING_ACCEL_KEYS = ("accel:bitstream_name", "accel:function_id", "accel:function_name")
# The validation context key (`validated(..., context=...)`) holding the operator's AmountLimits.
LIMITS = "amount_limits"


def _check_resource(rc: str) -> None:
    """The resource class; its amount is checked against the limits with the whole profile."""
    if rc not in CYBORG_RCS and not valid_resource_class(rc):
        raise ValueError(f"resource class {rc!r} is neither a standard one (os-resource-classes) nor "
                         "CUSTOM_ followed by [A-Z0-9_]")


def _check_trait(trait: str, value: str) -> None:
    if not valid_trait(trait):
        raise ValueError(f"Unsupported trait name {trait!r}: neither a standard trait (os-traits) nor "
                         "CUSTOM_ followed by [A-Z0-9_]")
    if value not in TRAIT_VALUES:
        raise ValueError(f"Unsupported trait value {value!r}: must be 'required' or 'forbidden'")


def _check_accel(key: str, value: str) -> None:
    """The accel: keys rayborg acts on; any other accel: key passes, as upstream."""
    if key == "accel:attach_target" and value not in ATTACH_TARGETS:
        raise ValueError(f"{value!r} is not an attach target: must be one of {', '.join(ATTACH_TARGETS)}")
    if key in NAMING_ACCEL_KEYS and not value.strip():
        raise ValueError("must not be empty")


def normalize_group(group: dict[str, str]) -> dict[str, str]:
    """One request group, checked, with spaces after the prefix stripped; key order kept. A bad
    value's error names its key."""
    if not group:
        raise ValueError("A device profile group must not be empty")
    out: dict[str, str] = {}
    for raw_key, value in group.items():
        prefix = next((p for p in KEY_PREFIXES if raw_key.startswith(p)), None)
        if prefix is None:
            raise ValueError(f"Device profile group keys must be of the form ^(resources:|trait:|accel:), "
                             f"got {raw_key!r}")
        name = raw_key[len(prefix):].strip()
        if not name:
            raise ValueError(f"Device profile group key {raw_key!r} names nothing after the prefix")
        key = prefix + name
        try:
            if prefix == "resources:":
                _check_resource(name)
            elif prefix == "trait:":
                _check_trait(name, value)
            else:
                _check_accel(key, value)
        except ValueError as exc:
            raise ValueError(f"key {key!r}: {exc}") from None
        if key in out:
            raise ValueError(f"Device profile group key {key!r} appears twice")
        out[key] = value
    return out


class DeviceProfileCreate(Strict):
    """One element of the POST body (a one-element list)."""

    name: str = Field(min_length=1, max_length=255, pattern=NAME_PATTERN)
    description: str | None = Field(default=None, max_length=255)
    groups: list[dict[str, str]] = Field(min_length=1)
    uuid: str | None = None

    @field_validator("groups")
    @classmethod
    def _groups(cls, groups: list[dict[str, str]], info: ValidationInfo) -> list[dict[str, str]]:
        """Each group's syntax, then every amount within the limits (the context's LIMITS)."""
        out = []
        for index, group in enumerate(groups):
            try:
                out.append(normalize_group(group))
            except ValueError as exc:
                raise ValueError(f"group {index}: {exc}") from None
        limits: AmountLimits = info.context[LIMITS]
        if error := amounts_error(out, limits):
            raise ValueError(error)
        return out

    @field_validator("uuid")
    @classmethod
    def _uuid(cls, value: str | None) -> str | None:
        import uuid as uuidlib

        if value is None:
            return None
        try:
            if len(value) != 36:
                raise ValueError
            return str(uuidlib.UUID(value))
        except ValueError:
            raise ValueError(f"{value!r} is not a valid UUID") from None


class DeviceProfile(BaseModel):
    uuid: str
    name: str
    description: str | None
    groups: list[dict[str, str]]
    created_at: str | None
    updated_at: str | None
    links: list[Link]


class DeviceProfileList(BaseModel):
    device_profiles: list[DeviceProfile]


class DeviceProfileShow(BaseModel):
    device_profile: DeviceProfile


class ListQuery(BaseModel):
    name: str | None = Field(default=None, description="Comma-separated exact names")


class DeleteQuery(BaseModel):
    value: str | None = Field(default=None, description="Comma-separated names (upstream form)")
    name: str | None = Field(default=None, description="Comma-separated names (spec form)")
