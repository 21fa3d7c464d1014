"""Refusals the store raises; the API maps each kind to a status code (api/http.py)."""


class StoreError(Exception):
    """A request the store refuses; the API maps each subclass to a status code."""


class NotFoundError(StoreError, LookupError):
    """Unknown (or, for the caller, invisible) row."""


class ConflictError(StoreError):
    """Wrong state for the transition, or a duplicate."""


class InvalidError(StoreError, ValueError):
    """A request that can never succeed as asked."""


class ServiceTokenRequired(StoreError):
    """The operation touches an ARQ bound to an instance: only Nova (a service token) may do that."""


class LockedError(StoreError):
    """Asked for resolved ARQs while some are still binding."""


class StateConflict(ConflictError):
    """An ARQ is not in a state the transition may start from (or lost a race)."""


class QuotaExceeded(StoreError):
    """A bind would take a project over its limit for a resource class (store/quotas.py)."""
