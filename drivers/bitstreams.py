"""Bitstreams: the Glance image properties of the bitstream spec, from Glance or a local directory.

Glance (keystoneauth1 Adapter, service type `image`) when configured; otherwise a directory where each
bitstream file `X` has a JSON sidecar `X.json` holding the same properties (plus an optional `id`,
else `bs-uuid`, else `X` is the id, and an optional `name`, else `X` is the name), e.g.
`aes.gbs.json` beside `aes.gbs`:

    {"bs-uuid": "...", "bs-name": "aes-128", "vendor": "Intel", "board": "PAC_ARRIA10",
     "version": "1.0", "function_uuid": "d8424dc4...", "function_name": "aes"}

A device profile group may name the function it needs instead of a bitstream id (train
device-profiles; `BitstreamQuery`): `accel:function_id` matches the property `accel:function_id`
(upstream Cyborg's) or the spec's `function_uuid`, `accel:function_name` the property
`accel:function_name` or `function_name`, `accel:bitstream_name` the image's name (a directory's:
`name`, else the file's name with its suffix). Exactly one bitstream must match.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from itertools import product
from typing import Any, Protocol

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from rayborg.drivers.base import BitstreamError, Driver, DriverDeployable, DriverDevice, DriverFailure

FPGA_TAG = "FPGA"  # "all of the FPGA bitstreams should be TAGGED as FPGA in Glance"


class BitstreamMeta(BaseModel):
    """Properties of the bitstream spec. Required: the non-nullable ones, except driver_ver/driver_path
    and topology that the spec itself calls optional elsewhere."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    bs_name: str = Field(alias="bs-name")
    bs_uuid: str = Field(alias="bs-uuid")
    vendor: str
    board: str
    version: str
    # upstream Cyborg looks functions up by the image property `accel:function_id`
    function_uuid: str = Field(validation_alias=AliasChoices("function_uuid", "accel:function_id"))
    shell_id: str | None = None
    driver: str | None = None
    driver_ver: str | None = None
    driver_path: str | None = None
    topology: Any = None
    description: str | None = None
    region_uuid: str | None = None
    function_name: str | None = Field(None, validation_alias=AliasChoices("function_name",
                                                                         "accel:function_name"))
    name: str | None = None  # Glance's image name (`accel:bitstream_name` matches it)


class Bitstream(BaseModel):
    image_id: str
    meta: BitstreamMeta
    path: Path  # Path() while only the metadata is known (found in Glance, not downloaded)
    downloaded: bool = False  # a temporary copy (from Glance) that `discard` deletes

    @property
    def name(self) -> str:
        return self.meta.name or self.path.name

    def discard(self) -> None:
        """Delete a downloaded copy once programmed (or failed); a local directory's file stays."""
        if self.downloaded:
            self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class BitstreamQuery:
    """A bitstream asked for by what it does rather than by id (see the module docstring)."""

    function_id: str | None = None
    function_name: str | None = None
    bitstream_name: str | None = None
    region_uuid: str | None = None

    @classmethod
    def from_group(cls, group: Mapping[str, Any]) -> BitstreamQuery | None:
        """The query of a device profile group's `accel:` keys; None when it names no function."""
        if not group.keys() & PROFILE_KEYS.keys():  # most binds: no function, no work
            return None
        return cls(**{field: str(group[key]) for key, field in PROFILE_KEYS.items() if key in group})

    def matches(self, bs: Bitstream) -> bool:
        meta = bs.meta
        return ((self.function_id is None or _norm(meta.function_uuid) == _norm(self.function_id))
                and (self.function_name is None or meta.function_name == self.function_name)
                and (self.bitstream_name is None or bs.name == self.bitstream_name)
                and (self.region_uuid is None or _norm(meta.region_uuid) == _norm(self.region_uuid)))

    def __str__(self) -> str:
        keys = {field: key for key, field in PROFILE_KEYS.items()}
        return " ".join(f"{keys.get(f.name, f.name)}={getattr(self, f.name)}" for f in fields(self)
                        if getattr(self, f.name) is not None) or "(no filter)"


# device profile key -> BitstreamQuery field
PROFILE_KEYS = {"accel:function_id": "function_id", "accel:function_name": "function_name",
                "accel:bitstream_name": "bitstream_name"}
FUNCTION_TRAIT = "CUSTOM_FPGA_FUNCTION_ID_"  # + <VENDOR>_<ID> (train nova-placement)


def already_runs(bs: Bitstream, bitstream_id: str | None, reported: Iterable[str]) -> bool:
    """Whether a deployable holding `bitstream_id`, whose driver reports `reported` (function traits
    CUSTOM_FPGA_FUNCTION_ID_<VENDOR>_<ID>, or bare function ids), already runs `bs`'s function."""
    if bitstream_id is not None and bitstream_id == bs.image_id:
        return True
    trait_tail = "_" + re.sub(r"[^A-Z0-9_]", "_", bs.meta.function_uuid.upper())
    function = _norm(bs.meta.function_uuid)
    return any(r.endswith(trait_tail) if r.startswith(FUNCTION_TRAIT) else _norm(r) == function for r in reported)


class BitstreamSource(Protocol):
    def fetch(self, image_id: str) -> Bitstream: ...

    def find(self, query: BitstreamQuery) -> Bitstream:
        """The one bitstream matching; its file may not be here yet (`local_copy`)."""
        ...

    def local_copy(self, bs: Bitstream) -> Bitstream:
        """`bs` as a file on this host (a download, for Glance: `discard` it once programmed)."""
        ...


def parse_meta(props: dict[str, Any], *, image_id: str) -> BitstreamMeta:
    try:
        return BitstreamMeta.model_validate(props)
    except ValidationError as exc:
        missing = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors())
        raise BitstreamError(f"bitstream {image_id} has bad or missing metadata: {missing}",
                             device=image_id) from None


def _norm(text: str | None) -> str:
    return re.sub(r"[^0-9a-z]", "", (text or "").lower())


def _pick_one(found: list[Bitstream], what: BitstreamQuery) -> Bitstream:
    if not found:
        raise BitstreamError(f"no bitstream matches {what}", device=str(what))
    if len(found) > 1:  # the spec: "bitstream choice policy is outside Cyborg"
        ids = ", ".join(sorted(b.image_id for b in found))
        raise BitstreamError(f"more than one bitstream matches {what}: {ids}", device=str(what))
    return found[0]


class LocalBitstreams:
    """A directory of bitstream files, each with a `<file>.json` sidecar of spec properties."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)

    def all(self) -> list[Bitstream]:
        out = []
        for sidecar in sorted(self.dir.glob("*.json")):
            out.append(self._load(sidecar))
        return out

    def _load(self, sidecar: Path) -> Bitstream:
        try:
            props = json.loads(sidecar.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BitstreamError(f"unreadable bitstream metadata {sidecar}: {exc}", device=str(sidecar)) from None
        image_id = str(props.get("id") or props.get("bs-uuid") or sidecar.stem)
        meta = parse_meta(props, image_id=image_id)
        return Bitstream(image_id=image_id, meta=meta, path=sidecar.with_suffix(""))

    def fetch(self, image_id: str) -> Bitstream:
        for bs in self.all():
            if image_id in (bs.image_id, bs.meta.bs_uuid, bs.path.name):
                return self.local_copy(bs)
        raise BitstreamError(f"bitstream {image_id} does not exist in {self.dir}", device=image_id)

    def find(self, query: BitstreamQuery) -> Bitstream:
        return _pick_one([b for b in self.all() if query.matches(b)], query)

    def local_copy(self, bs: Bitstream) -> Bitstream:
        if not bs.path.is_file():
            raise BitstreamError(f"bitstream file {bs.path} does not exist", device=bs.image_id)
        return bs


class GlanceBitstreams:
    """Bitstreams as Glance v2 images (tag FPGA, spec properties as image properties)."""

    def __init__(self, session, *, endpoint_override: str | None = None, interface: str = "public",
                 region_name: str | None = None, download_dir: str | Path | None = None):
        from keystoneauth1.adapter import Adapter

        self.adapter = Adapter(session, service_type="image", interface=interface, region_name=region_name,
                               endpoint_override=endpoint_override)
        self.download_dir = Path(download_dir) if download_dir else None

    def _get(self, url: str, image_id: str, **kw):
        from keystoneauth1 import exceptions as ks_exc

        try:
            return self.adapter.get(url, **kw)
        except ks_exc.NotFound:
            raise BitstreamError(f"bitstream image {image_id} does not exist in Glance", device=image_id) from None
        except ks_exc.ClientException as exc:
            raise BitstreamError(f"Glance request {url} failed: {exc}", device=image_id) from None

    def _meta(self, image: dict[str, Any]) -> BitstreamMeta:
        image_id = image.get("id", "?")
        if FPGA_TAG not in (image.get("tags") or []):
            raise BitstreamError(f"image {image_id} is not tagged {FPGA_TAG}", device=image_id)
        return parse_meta(image, image_id=image_id)

    def _download(self, image_id: str, meta: BitstreamMeta) -> Bitstream:
        from requests import RequestException

        resp = self._get(f"/v2/images/{image_id}/file", image_id, stream=True)
        path = None
        try:
            if self.download_dir:
                self.download_dir.mkdir(parents=True, exist_ok=True)
            # one file per download: two devices programmed with one image must not share (or
            # delete) each other's copy
            fd, name = tempfile.mkstemp(prefix=f"{image_id}-", suffix=".gbs", dir=self.download_dir)
            path = Path(name)
            with os.fdopen(fd, "wb") as fh:
                for chunk in resp.iter_content(1 << 20):
                    fh.write(chunk)
        except (RequestException, OSError) as exc:  # connection cut mid-stream, disk full, no such dir
            if path is not None:
                path.unlink(missing_ok=True)
            raise BitstreamError(f"download of bitstream image {image_id} failed: {exc}", device=image_id) from None
        return Bitstream(image_id=image_id, meta=meta, path=path, downloaded=True)

    def fetch(self, image_id: str) -> Bitstream:
        image = self._get(f"/v2/images/{image_id}", image_id).json()
        return self._download(image_id, self._meta(image))

    def find(self, query: BitstreamQuery) -> Bitstream:
        images: dict[str, dict[str, Any]] = {}
        for params in _glance_filters(query):  # one listing per spelling of the properties asked for
            url: str | None = "/v2/images"
            while url:
                body = self._get(url, str(query), params=params).json()
                images.update((img["id"], img) for img in body.get("images", []))
                url, params = body.get("next"), None  # Glance pages its answers
        # Glance filters by property already; filter again so a lax server cannot widen the match.
        found = [bs for bs in (Bitstream(image_id=i, meta=self._meta(img), path=Path()) for i, img in images.items())
                 if query.matches(bs)]
        return _pick_one(found, query)

    def local_copy(self, bs: Bitstream) -> Bitstream:
        return bs if bs.downloaded else self._download(bs.image_id, bs.meta)


# BitstreamQuery field -> the image properties that may hold it (Glance filters on exact names)
_GLANCE_PROPERTIES = {"function_id": ("function_uuid", "accel:function_id"),
                      "function_name": ("function_name", "accel:function_name"),
                      "bitstream_name": ("name",), "region_uuid": ("region_uuid",)}


def _glance_filters(query: BitstreamQuery) -> list[dict[str, str]]:
    """The Glance image-list filters that together find every image `query` may match."""
    asked = [(f.name, getattr(query, f.name)) for f in fields(query) if getattr(query, f.name) is not None]
    spellings = [[(prop, value) for prop in _GLANCE_PROPERTIES[name]] for name, value in asked]
    return [{"tag": FPGA_TAG} | dict(combo) for combo in product(*spellings)]


def check_fits(meta: BitstreamMeta, *, device: str, vendor_names: set[str], boards: set[str],
               region_id: str | None) -> None:
    """Raise `BitstreamError` unless the bitstream's vendor, board and region fit the device."""
    if _norm(meta.vendor) not in {_norm(v) for v in vendor_names}:
        raise BitstreamError(f"bitstream {meta.bs_uuid} is for vendor {meta.vendor!r}, not this device's "
                             f"({', '.join(sorted(vendor_names))})", device=device)
    if boards and _norm(meta.board) not in {_norm(b) for b in boards}:
        raise BitstreamError(f"bitstream {meta.bs_uuid} is for board {meta.board!r}, not this device's "
                             f"({', '.join(sorted(boards))})", device=device)
    if meta.region_uuid and region_id and _norm(meta.region_uuid) != _norm(region_id):
        raise BitstreamError(f"bitstream {meta.bs_uuid} needs region {meta.region_uuid}, device region is "
                             f"{region_id}", device=device)


def board_names(device: DriverDevice) -> set[str]:
    """The names a bitstream's `board` may give a PCI device: its model and its PCI device id, with
    and without 0x."""
    pid = device.std_board_info.get("device_id", "")
    return {device.model, pid, pid.removeprefix("0x")} - {""}


def program_target(driver: Driver, deployable: DriverDeployable | str, bitstream: Bitstream, *,
                   vendor: str, what: str = "bitstream") -> tuple[DriverDevice, DriverDeployable]:
    """The device and deployable `driver.program` is to load `bitstream` (a `what`: bitstream, DDP
    package) onto, once its file is known to exist and its metadata to fit them (`check_fits`: the
    vendor, `vendor` or the device's own, the board, one of `board_names`, and the deployable's PR
    region if it has one); BitstreamError otherwise, also for a deployable the driver does not find."""
    name = deployable if isinstance(deployable, str) else deployable.name
    try:
        device, dep = driver.find_deployable(name)
    except DriverFailure as exc:
        raise BitstreamError(str(exc), device=name) from None
    if not bitstream.path.is_file():
        raise BitstreamError(f"{what} {bitstream.path} does not exist", device=device.key)
    check_fits(bitstream.meta, device=device.key, vendor_names={vendor, device.vendor},
               boards=board_names(device), region_id=dep.attributes.get("region_id"))
    return device, dep


def bitstream_source(config: dict[str, Any] | None) -> BitstreamSource | None:
    """Build a source from settings: {"dir": path} or {"glance_url": url, plus "token" or keystone
    password options ("auth_url", "username", "password", "project_name", ...)}; None when empty."""
    if not config:
        return None
    if config.get("dir"):
        return LocalBitstreams(config["dir"])
    from keystoneauth1 import session as ks_session

    auth = None
    if config.get("auth_url"):
        from keystoneauth1.identity import v3

        auth = v3.Password(auth_url=config["auth_url"], username=config.get("username"),
                           password=config.get("password"), project_name=config.get("project_name"),
                           user_domain_id=config.get("user_domain_id", "default"),
                           project_domain_id=config.get("project_domain_id", "default"))
    elif config.get("token"):
        from keystoneauth1 import token_endpoint

        auth = token_endpoint.Token(config.get("glance_url"), config["token"])
    return GlanceBitstreams(ks_session.Session(auth=auth), endpoint_override=config.get("glance_url"),
                            region_name=config.get("region_name"), download_dir=config.get("download_dir"))
