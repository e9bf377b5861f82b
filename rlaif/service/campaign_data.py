"""A labeling campaign's stored sample (`<service dir>/campaigns/<id>/items.jsonl`) and its human labels as gold.

Apart from the routes (campaigns.py) so that the audit job reads a campaign without importing the web layer.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from rlaif.audit.gold import GoldItem, human_gold
from rlaif.service.db import ServiceDB, valid_id
from rlaif.service.paths import campaign_folder
from rlaif.service.settings import ServiceSettings

__all__ = ["ITEMS", "items_path", "read_items", "campaign_gold"]

ITEMS = "items.jsonl"


def items_path(settings: ServiceSettings, campaign_id: str) -> Path:
    """The campaign's sample file; the id is checked first so it can never name a path outside the service directory."""
    if not valid_id("campaign", campaign_id):
        raise ValueError(f"not a campaign id: {campaign_id!r}")
    return campaign_folder(settings, campaign_id) / ITEMS


def read_items(settings: ServiceSettings, campaign_id: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in items_path(settings, campaign_id).read_text(encoding="utf-8").splitlines()
            if line.strip()]


def campaign_gold(db: ServiceDB, settings: ServiceSettings, campaign_id: str) -> list[GoldItem]:
    """The campaign's human labels as gold items (majority over annotators), in the batch's pair order."""
    by_item: dict[str, list[str]] = defaultdict(list)
    for row in db.labels(campaign_id):
        by_item[row["item_id"]].append(row["label"])
    if not by_item:
        return []
    return [human_gold(item["pair_id"], item["prompt"], item["response_1"], item["response_2"], by_item[item["item_id"]])
            for item in read_items(settings, campaign_id) if item["item_id"] in by_item]
