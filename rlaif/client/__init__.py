"""A small client of `rlaif serve`, for the machine that trains (it needs only httpx, not rlaif's engines).

    Client, AsyncClient      the synchronous routes: judges, pairwise and pointwise judging, rewards, health
    ServiceError             what they raise (an rlaif.errors.RlaifError) with the service's status and message
    RemoteJudgeReward        a TRL reward function (GRPO, RLOO) calling the service's /v1/reward
    openrlhf_reward.py       a file for OpenRLHF's --remote_rm_url (standalone: stdlib and torch only)
"""

from __future__ import annotations

from rlaif.client.api import KEY_ENV, AsyncClient, Client, ServiceError
from rlaif.client.reward import RemoteJudgeReward

__all__ = ["AsyncClient", "Client", "KEY_ENV", "RemoteJudgeReward", "ServiceError"]
