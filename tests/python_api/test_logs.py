"""rayborg.logs: the text and json formats carry the arq/host/device/deployable/instance fields given
with `extra=`, every command's logging follows --log-format / $RAYBORG_LOG_FORMAT, and an unexpected
error in a command is one line on stderr (no Ray)."""

import io
import json
import logging

import pytest

from rayborg import logs
from rayborg.cli import main

FIELDS = {"arq": "a1", "host": "host-a", "device": "d1", "deployable": "fpga 0", "instance": "i1"}


def emit(fmt: str, extra: dict | None = None, exc: bool = False) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.formatter(fmt))
    logger = logging.getLogger("rayborg.test-logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        if exc:
            try:
                raise RuntimeError("kaput")
            except RuntimeError:
                logger.exception("it broke", extra=extra)
        else:
            logger.warning("programmed %s", "bs-1", extra=extra)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_text_appends_the_fields_as_key_value():
    line = emit("text", FIELDS).rstrip("\n")
    assert line.endswith(' WARNING rayborg.test-logs: programmed bs-1 arq=a1 host=host-a device=d1 '
                         'deployable="fpga 0" instance=i1')
    assert emit("text", {"host": "h", "arq": None, "colour": "red"}).rstrip().endswith("bs-1 host=h")
    # a traceback stays below the fields' line
    first, *rest = emit("text", {"arq": "a1"}, exc=True).splitlines()
    assert first.endswith("it broke arq=a1") and rest[0] == "Traceback (most recent call last):"


def test_json_is_one_object_per_line_with_the_fields():
    out = emit("json", FIELDS)
    assert out.count("\n") == 1
    rec = json.loads(out)
    assert rec.pop("time").endswith("+00:00")
    assert rec == {"level": "WARNING", "logger": "rayborg.test-logs", "message": "programmed bs-1", **FIELDS}
    rec = json.loads(emit("json", {"host": "h"}, exc=True))
    assert rec["host"] == "h" and "arq" not in rec and "RuntimeError: kaput" in rec["exception"]


def test_format_choice_and_bad_values(monkeypatch):
    monkeypatch.setenv(logs.ENV, "JSON")
    assert isinstance(logs.formatter(), logs.JsonFormatter)
    assert isinstance(logs.formatter("text"), logs.TextFormatter)  # the flag wins
    monkeypatch.setenv(logs.ENV, "xml")
    with pytest.raises(ValueError, match="RAYBORG_LOG_FORMAT must be one of text, json, not 'xml'"):
        logs.formatter()


class FakeConnection:
    def devices(self, **kwargs):
        logging.getLogger("rayborg.fake").warning("listing", extra={"host": "host-a", "arq": "a1"})
        return []

    def status(self):
        raise RuntimeError("boom\nand a second line nobody needs")


@pytest.fixture
def fake_rayborg(monkeypatch):
    import rayborg.commands.ops as ops

    monkeypatch.setattr(ops, "_connect", lambda args, admin=False: FakeConnection())
    yield
    logs.setup("text")  # leave no json handler behind for other tests


@pytest.mark.parametrize("argv", [["--log-format", "json", "devices"], ["devices", "--log-format", "json"]])
def test_commands_log_in_the_chosen_format(fake_rayborg, capsys, argv):
    assert main(argv + ["--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out) == []
    rec = json.loads(out.err.strip().splitlines()[-1])
    assert (rec["message"], rec["host"], rec["arq"], rec["level"]) == ("listing", "host-a", "a1", "WARNING")


def test_env_selects_the_format_and_a_bad_one_is_one_line(fake_rayborg, capsys, monkeypatch):
    monkeypatch.setenv(logs.ENV, "text")
    assert main(["devices"]) == 0
    assert capsys.readouterr().err.rstrip().endswith("rayborg.fake: listing arq=a1 host=host-a")
    monkeypatch.setenv(logs.ENV, "yaml")
    assert main(["devices"]) == 2
    assert capsys.readouterr().err == (
        "rayborg devices: RAYBORG_LOG_FORMAT must be one of text, json, not 'yaml'\n"
    )


def test_an_unexpected_error_is_one_line_unless_debug(fake_rayborg, capsys):
    assert main(["status"]) == 1
    err = capsys.readouterr().err
    assert err == "rayborg status: RuntimeError: boom (--debug shows the traceback)\n"
    assert main(["status", "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.splitlines()[-1] == "rayborg status: RuntimeError: boom"
