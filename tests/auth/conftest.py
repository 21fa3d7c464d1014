"""A real Keystone for the auth tests (session-wide), and apps that validate tokens against it."""

from __future__ import annotations

import os

import pytest
from servers import CYBORG, KeystoneServer, KeystoneUnavailable


@pytest.fixture(scope="session")
def keystone():
    """Keystone 30 from PyPI (installed by run-keystone on first use, a minute or two).

    Skipped only outside CI and only when it cannot be installed or started (no package index)."""
    server = KeystoneServer()
    try:
        server.start()
    except KeystoneUnavailable as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"Keystone could not be installed or started (no network?): {exc}")
    yield server
    server.stop()


@pytest.fixture
def sqlite_store(sqlite_url):
    from rayborg.store.engine import Store
    from rayborg.store.migrate import upgrade

    s = Store(sqlite_url)
    upgrade(s.engine)
    yield s
    s.dispose()


def keystone_settings(sqlite_url: str, auth_url: str, **overrides):
    from rayborg.settings import KeystoneOptions, Settings

    options = KeystoneOptions(auth_url=auth_url, username=CYBORG.name, password="secret",
                              project_name=CYBORG.project)
    return Settings(database_url=sqlite_url, auth_strategy="keystone", keystone=options, _env_file=None,
                    **overrides)


@pytest.fixture
def ks_app_factory(sqlite_url, sqlite_store, aiohttp_client):
    """`await make(auth_url, **settings)` -> (client, app) with Keystone auth."""
    from rayborg.api.app import create_app

    async def make(auth_url: str, **overrides):
        app = create_app(keystone_settings(sqlite_url, auth_url, **overrides), sqlite_store)
        return await aiohttp_client(app), app

    return make
