"""Device type from the User-Agent, with the `user-agents` package."""

from __future__ import annotations

from functools import lru_cache

from user_agents import parse


@lru_cache(maxsize=4096)
def device_type(user_agent: str) -> str:
    """One of DEVICE_TYPES; parsing is slow, and a site sees few distinct agents."""
    if not user_agent:
        return "other"
    agent = parse(user_agent)
    if agent.is_bot:
        return "bot"
    if agent.is_tablet:
        return "tablet"
    if agent.is_mobile:
        return "mobile"
    if agent.is_pc:
        return "desktop"
    return "other"
