"""Prepared reads: DateTime columns as the API's ISO text (issue 18 item 3)."""

from datetime import datetime, timedelta, timezone

from sqlalchemy import DateTime
from sqlalchemy.dialects import postgresql, sqlite

from rayborg.store import prepared


def test_iso_text_of_sqlite_text_and_datetimes():
    dialect = sqlite.dialect()
    convert = prepared._iso_processor(DateTime(timezone=True).dialect_impl(dialect).result_processor(dialect, None))
    assert convert("2020-03-13 02:26:31.870371") == "2020-03-13T02:26:31+00:00"
    assert convert("2020-03-13 02:26:31") == "2020-03-13T02:26:31+00:00"
    assert convert(datetime(2020, 3, 13, 2, 26, 31, 5)) == "2020-03-13T02:26:31+00:00"
    east = datetime(2020, 3, 13, 4, 26, 31, tzinfo=timezone(timedelta(hours=2)))
    assert convert(east) == "2020-03-13T02:26:31+00:00"


def test_iso_text_of_postgresql_datetimes():
    dialect = postgresql.dialect()
    convert = prepared._iso_processor(DateTime(timezone=True).dialect_impl(dialect).result_processor(dialect, None))
    assert convert(datetime(2020, 3, 13, 2, 26, 31, tzinfo=timezone.utc)) == "2020-03-13T02:26:31+00:00"


def test_prepared_read_gives_iso_text(tmp_path):
    from rayborg.store.engine import Store
    from rayborg.store.migrate import upgrade
    from rayborg.store.queries import device_profiles

    url = f"sqlite:///{tmp_path / 'p.db'}"
    upgrade(url)
    store = Store(url)
    made = store.transact(device_profiles.create_profile, "p", [{"resources:FPGA": "1"}])
    (row,) = store.query(device_profiles.list_profiles)
    assert row.created_at == prepared.iso_text(made.created_at)
    assert row.updated_at is None
    store.dispose()
