"""The rows of recently served models, remembered so that /predict need not ask the database.

A model's row never changes once registered; it can only be deleted. Deleting through this api
process forgets it at once; another api process (CLIPFT_API_WORKERS, more containers) serves a
deleted model at most `model_lookup_seconds` longer, as a revoked key works at most
`auth_cache_seconds` longer. Reading the row cost a pooled connection, a query and its result
for every request: about a sixth of the api's time under /predict load on a small model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from app.core.expiring import ExpiringCache
from app.core.principal import Principal

Row = TypeVar("Row")

# (tenant, admin, model id): what a principal may see depends on both.
LookupKey = tuple[str, bool, str]


class ModelLookup(Generic[Row]):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._rows = ExpiringCache[LookupKey, Row]()

    def find(
        self,
        model_ids: list[str],
        principal: Principal,
        read: Callable[[list[str]], list[Row]],
    ) -> list[Row]:
        """The rows of `model_ids` in order: remembered ones, and `read(missing ids)` for the
        rest (which raises for an unknown id, as the database answers)."""
        if self.seconds <= 0:
            return read(model_ids)
        keys = [_key(model_id, principal) for model_id in model_ids]
        found = {key: row for key in keys if (row := self._rows.get(key)) is not None}
        missing = [key for key in keys if key not in found]
        if missing:
            for key, row in zip(missing, read([key[2] for key in missing]), strict=True):
                self._rows.put(key, row, self.seconds)
                found[key] = row
        return [found[key] for key in keys]

    def remembered(self, model_id: str, principal: Principal) -> Row | None:
        """The row if this principal's lookup of it is remembered and fresh; never reads."""
        if self.seconds <= 0:
            return None
        return self._rows.get(_key(model_id, principal))

    def forget(self, model_id: str) -> None:
        """A deleted model: no principal finds it here again."""
        self._rows.forget(lambda key: key[2] == model_id)


def _key(model_id: str, principal: Principal) -> LookupKey:
    return (principal.tenant, principal.admin, model_id)
