"""Bitstream metadata from Glance (keystoneauth1, against a local http.server stand-in) and from a directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from glance_standin import IMG, glance_standin
from keystoneauth1 import session as ks_session

from rayborg.drivers import BitstreamError, HostDrivers, ProgrammingError
from rayborg.drivers.bitstreams import BitstreamQuery, GlanceBitstreams, LocalBitstreams, already_runs


@pytest.fixture
def glance():
    with glance_standin() as standin:
        yield standin


def store(url, tmp_path):
    return GlanceBitstreams(ks_session.Session(), endpoint_override=url, download_dir=tmp_path / "dl")


def test_glance_fetch_downloads_and_parses(glance, tmp_path):
    url, requests, _ = glance
    bs = store(url, tmp_path).fetch(IMG)
    assert bs.image_id == IMG and bs.meta.bs_name == "aes-128" and bs.meta.region_uuid == "ce48"
    assert bs.path.read_bytes() == f"bitstream {IMG}".encode()
    assert requests == [f"/v2/images/{IMG}", f"/v2/images/{IMG}/file"]


def test_glance_find_by_function(glance, tmp_path):
    url, requests, _ = glance
    glance = store(url, tmp_path)
    bs = glance.find(BitstreamQuery(function_id="d8424dc4a4a3c413f89e433683f9040b", region_uuid="ce48"))
    assert bs.image_id == IMG and not bs.downloaded  # found: metadata only, nothing downloaded yet
    assert all(r.startswith("/v2/images?") and "tag=FPGA" in r for r in requests)
    copy = glance.local_copy(bs)
    assert copy.downloaded and copy.path.read_bytes() == f"bitstream {IMG}".encode()
    with pytest.raises(BitstreamError, match="more than one bitstream matches accel:function_name=gzip: img-2, img-3"):
        glance.find(BitstreamQuery(function_name="gzip"))
    with pytest.raises(BitstreamError, match="no bitstream matches accel:function_id=00"):
        glance.find(BitstreamQuery(function_id="00"))
    assert glance.find(BitstreamQuery(bitstream_name="gzip-b")).image_id == "img-3"  # by image name
    assert glance.find(BitstreamQuery(function_name="gzip", bitstream_name="gzip")).image_id == "img-2"


def test_glance_finds_upstreams_accel_function_id_property(tmp_path):
    """Upstream Cyborg tags images with the property `accel:function_id`: found by either spelling,
    and an image carrying each spelling of one function makes two matches."""
    extra = {"up": {"id": "up", "name": "up.gbs", "tags": ["FPGA"], "bs-name": "u", "bs-uuid": "u",
                    "vendor": "Intel", "board": "b", "version": "1", "accel:function_id": "3AFB"}}
    with glance_standin(extra) as (url, requests, _):
        glance = store(url, tmp_path)
        assert glance.find(BitstreamQuery(function_id="3AFB")).meta.function_uuid == "3AFB"
        assert any("accel%3Afunction_id=3AFB" in r for r in requests)
        extra["up2"] = extra["up"] | {"id": "up2", "accel:function_id": None, "function_uuid": "3AFB"}
        with pytest.raises(BitstreamError, match="more than one bitstream matches accel:function_id=3AFB: up, up2"):
            glance.find(BitstreamQuery(function_id="3AFB"))


@pytest.mark.parametrize("image, message", [
    ("nope", "bitstream image nope does not exist in Glance"),
    ("cirros", "image cirros is not tagged FPGA"),
    ("bad", "bitstream bad has bad or missing metadata: bs-uuid, vendor, board, version, function_uuid"),
    ("cut", "download of bitstream image cut failed: .*IncompleteRead"),
])
def test_glance_errors(glance, tmp_path, image, message):
    with pytest.raises(BitstreamError, match=message):
        store(glance[0], tmp_path).fetch(image)
    assert not any((tmp_path / "dl").glob("*"))  # no half-downloaded file left behind


@pytest.mark.parametrize("exit_code", [0, 3])
def test_programming_by_image_id_deletes_the_download(glance, family_tree, make_tool, tmp_path, exit_code):
    seen = tmp_path / "seen"
    tool = make_tool("xbmgmt", f"pathlib.Path({str(seen)!r}).write_text(pathlib.Path(sys.argv[-1]).read_text())\n"
                               f"sys.exit({exit_code})")
    downloads = tmp_path / "dl"
    host = HostDrivers("n1", sysfs_root=family_tree("xilinx_fpga"), drivers=["xilinx_fpga"], options={
        "xilinx_fpga": {"tool": str(tool.path)},
        "bitstreams": {"glance_url": glance[0], "token": "admin", "download_dir": str(downloads)}})
    if exit_code:
        with pytest.raises(ProgrammingError, match="exit code 3"):
            host.program("xilinx_fpga", "n1_0000_3b_00_0", "xbs", timeout=30)
    else:
        assert host.program("xilinx_fpga", "n1_0000_3b_00_0", "xbs", timeout=30).name == "n1_0000_3b_00_0"
    (argv,) = tool.calls
    assert Path(argv[-1]).parent == downloads and seen.read_text() == "bitstream xbs"  # the tool had the image
    assert list(downloads.iterdir()) == []  # and it is gone, whatever the tool did


def test_local_directory(make_bitstream, tmp_path):
    d = make_bitstream("bs-a", "aa").parent
    make_bitstream("bs-b", "bb", function_name="gzip")
    local = LocalBitstreams(d)
    assert local.fetch("bs-a").meta.function_uuid == "aa" and local.fetch("bs-a.gbs").image_id == "bs-a"
    assert local.find(BitstreamQuery(function_name="gzip")).image_id == "bs-b"
    make_bitstream("bs-c", "cc")  # a second "aes"
    with pytest.raises(BitstreamError, match="more than one bitstream matches accel:function_name=aes"):
        local.find(BitstreamQuery(function_name="aes"))
    (d / "broken.gbs.json").write_text("{not json")
    with pytest.raises(BitstreamError, match="unreadable bitstream metadata"):
        local.fetch("bs-a")


def test_glance_source_from_settings_with_a_token(glance, tmp_path):
    from rayborg.drivers.bitstreams import bitstream_source

    src = bitstream_source({"glance_url": glance[0], "token": "admin", "download_dir": str(tmp_path)})
    assert isinstance(src, GlanceBitstreams)
    assert src.fetch(IMG).path.parent == tmp_path
    assert bitstream_source({}) is None and isinstance(bitstream_source({"dir": str(tmp_path)}), LocalBitstreams)


def test_local_directory_matches_profile_keys(make_bitstream):
    """A sidecar holds Glance's property names: upstream's `accel:function_id`/`accel:function_name`
    or the spec's; `accel:bitstream_name` is the sidecar's `name`, else the file's name."""
    d = make_bitstream("bs-a", "aa").parent
    make_bitstream("bs-u", None, **{"accel:function_id": "3AFB", "accel:function_name": "nic-40",
                                    "function_name": None})
    make_bitstream("bs-n", "nn", name="gzip.aocx")
    local = LocalBitstreams(d)
    assert local.find(BitstreamQuery(function_id="3afb")).image_id == "bs-u"  # ids compare case-blind
    assert local.find(BitstreamQuery(function_name="nic-40")).image_id == "bs-u"
    assert local.find(BitstreamQuery(bitstream_name="bs-a.gbs")).image_id == "bs-a"
    assert local.find(BitstreamQuery(bitstream_name="gzip.aocx")).image_id == "bs-n"
    with pytest.raises(BitstreamError, match="no bitstream matches accel:bitstream_name=bs-n.gbs"):
        local.find(BitstreamQuery(bitstream_name="bs-n.gbs"))  # its sidecar names it otherwise
    with pytest.raises(BitstreamError, match="no bitstream matches accel:function_id=aa accel:function_name=gzip"):
        local.find(BitstreamQuery(function_id="aa", function_name="gzip"))  # every key must match


def test_query_from_a_profile_group():
    assert BitstreamQuery.from_group({"resources:FPGA": "1", "accel:bitstream_id": "x"}) is None
    query = BitstreamQuery.from_group({"resources:FPGA": "1", "accel:function_name": "aes",
                                       "accel:bitstream_name": "aes.gbs"})
    assert query == BitstreamQuery(function_name="aes", bitstream_name="aes.gbs")
    assert str(query) == "accel:function_name=aes accel:bitstream_name=aes.gbs"


def test_already_runs_by_bitstream_or_reported_function(make_bitstream):
    bs = LocalBitstreams(make_bitstream("bs-a", "d8424dc4-a4a3").parent).find(BitstreamQuery(function_name="aes"))
    assert already_runs(bs, "bs-a", [])  # the stored bitstream
    assert already_runs(bs, None, ["CUSTOM_FPGA_FUNCTION_ID_INTEL_D8424DC4_A4A3"])  # the driver's trait
    assert already_runs(bs, "other", ["d8424dc4a4a3"])  # a bare function id (an attribute)
    assert not already_runs(bs, "other", ["CUSTOM_FPGA_FUNCTION_ID_INTEL_FF", "CUSTOM_FPGA_INTEL", "ff"])
    assert not already_runs(bs, None, ["CUSTOM_FPGA_FUNCTION_ID_INTEL_XD8424DC4_A4A3"])
