"""HTTP routes for predict."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["predict"])
