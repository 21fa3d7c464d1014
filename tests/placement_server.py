"""A real OpenStack Placement (from PyPI) on loopback for the tests: tests/service_starters.py."""

from __future__ import annotations

from service_starters import Placement


class PlacementServer(Placement):
    def restart(self, keep_db: bool = True) -> None:
        """Stop and start again on the same port (the database kept unless `keep_db` is false)."""
        self.start(keep_db=keep_db)
