"""A labeling campaign's stored sample (`<service dir>/campaigns/<id>/items.jsonl`) and its human labels as gold.

Apart from the routes (routes/labeling.py) so that the audit job reads a campaign without importing the web layer.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from rlaif.audit.gold import GoldItem, human_gold
from rlaif.audit.sampling import Candidate
from rlaif.service.paths import campaign_folder
from rlaif.service.settings import ServiceSettings
from rlaif.service.store import JobStore, valid_id

__all__ = ["ITEMS", "CampaignItem", "items_path", "sample_items", "write_items", "read_items", "campaign_gold"]

ITEMS = "items.jsonl"


class CampaignItem(BaseModel):
    """One pair of the sample as the page shows it. `flip` (a seeded coin) shows response_2 on the left, so the
    position on screen says nothing about response_1 / response_2."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    item_id: str
    pair_id: str
    prompt: str
    response_1: str
    response_2: str
    flip: bool

    def sides(self) -> tuple[str, str]:
        """(left, right) as shown."""
        return (self.response_2, self.response_1) if self.flip else (self.response_1, self.response_2)

    def label(self, choice: Literal["left", "right", "tie"]) -> str:
        """left / right / tie on screen -> A (response_1) / B (response_2) / tie, undoing the flip."""
        if choice == "tie":
            return "tie"
        return "B" if (choice == "left") == self.flip else "A"


def items_path(settings: ServiceSettings, campaign_id: str) -> Path:
    """The campaign's sample file; the id is checked first so it can never name a path outside the service directory."""
    if not valid_id("campaign", campaign_id):
        raise ValueError(f"not a campaign id: {campaign_id!r}")
    return campaign_folder(settings, campaign_id) / ITEMS


def sample_items(picked: list[Candidate], order: list[str], seed: int) -> list[CampaignItem]:
    """The sample in the batch's pair order (so strata are not shown in clumps), each with its seeded coin."""
    position = {pair_id: i for i, pair_id in enumerate(order)}
    coin = random.Random(f"flip:{seed}")
    return [CampaignItem(item_id=str(i), pair_id=c.pair_id, prompt=c.prompt, response_1=c.response_1,
                         response_2=c.response_2, flip=coin.random() < 0.5)
            for i, c in enumerate(sorted(picked, key=lambda c: position[c.pair_id]))]


def write_items(settings: ServiceSettings, campaign_id: str, items: list[CampaignItem]) -> None:
    """Write the sample before the campaign's row exists, so every campaign in the store has its items."""
    path = items_path(settings, campaign_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(ITEMS + ".tmp")
    tmp.write_text("".join(json.dumps(item.model_dump(), ensure_ascii=False) + "\n" for item in items), encoding="utf-8")
    tmp.replace(path)


def read_items(settings: ServiceSettings, campaign_id: str) -> list[CampaignItem]:
    return [CampaignItem.model_validate_json(line)
            for line in items_path(settings, campaign_id).read_text(encoding="utf-8").splitlines() if line.strip()]


def campaign_gold(store: JobStore, settings: ServiceSettings, campaign_id: str) -> list[GoldItem]:
    """The campaign's human labels as gold items (majority over annotators), in the batch's pair order."""
    by_item: dict[str, list[str]] = defaultdict(list)
    for row in store.campaigns.labels(campaign_id):
        by_item[row.item_id].append(row.label)
    if not by_item:
        return []
    return [human_gold(item.pair_id, item.prompt, item.response_1, item.response_2, by_item[item.item_id])
            for item in read_items(settings, campaign_id) if item.item_id in by_item]
