"""Placeholder until the labeling routes are ported (being written)."""

from fastapi import APIRouter

router = APIRouter(tags=["campaigns"])
