"""PLACEHOLDER: in-process binder (being written)."""


class LocalBinder:
    def __init__(self, store):
        self.store = store

    async def close(self) -> None:
        return None
