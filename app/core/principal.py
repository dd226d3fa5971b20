"""Who is asking: the typed identity every domain's reads are narrowed by.

It sits in core, below the routes and the key store that produce it (as the template's
`CurrentUser` type sits below its routes), so core's shared queries can take it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    """Who is asking: the tenant whose rows they see, and whether they see every tenant's."""

    tenant: str
    admin: bool
    key_id: str | None = None

    def sees(self, tenant: str) -> bool:
        return self.admin or tenant == self.tenant
