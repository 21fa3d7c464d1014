"""store/urls.py: database URLs parsed and shown, driver errors reduced to a line, for code outside store/."""

import pytest
from sqlalchemy import create_engine, text

from rayborg.store import urls


def test_backend_name_of_each_form_and_a_string_that_is_no_url():
    assert urls.backend_name("sqlite:////tmp/x.db") == "sqlite"
    assert urls.backend_name("postgresql+psycopg://u:p@h/db") == "postgresql"
    with pytest.raises(ValueError, match="not a database URL: 'nonsense'"):
        urls.backend_name("nonsense")


def test_shown_url_hides_the_password_only():
    assert urls.shown_url("postgresql://rayborg:s3cret@db:5432/rayborg") == "postgresql://rayborg:***@db:5432/rayborg"
    assert urls.shown_url("sqlite:////var/lib/rayborg.db") == "sqlite:////var/lib/rayborg.db"


def test_a_driver_error_is_one_line_and_caught_as_database_error(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(urls.DatabaseError) as caught, engine.connect() as conn:
        conn.execute(text("SELECT * FROM no_such_table"))
    assert urls.error_reason(caught.value) == "no such table: no_such_table"
