"""Every Redis key popin writes, named in one place, with its Redis Cluster hash tag.

Redis Cluster runs a Lua script or a MULTI only when all its keys hash to one slot, and
the slot of a key with braces is that of the text between its first braces (the hash
tag). So each family carries the tag of what its atomic steps touch together:

    {prefix}:{site:visitor}:profile|turn|outbox|presence|session:ID|referral:ID   one visitor
    {prefix}:{site}:KIND:NAME        one site: user links, claims, bookings, slots, quotas,
                                     leads, stats, recent log, the per-visitor indexes
    {prefix}:{site:audience=NAME}:PART  one audience (members, changes, expiries, sizes)
    {prefix}:{deliveries}:ID|due     the webhook queue (leased across sites)
    {prefix}:api-key:DIGEST, {prefix}:settings, {prefix}:node:ID   single-key reads, pub/sub

Profiles and outboxes, most of the data and of the traffic, spread over every shard by
visitor; a site's bookings, claims and statistics share a slot, so that a booking's
capacity, idempotency and quotas are checked in one script. On one server or behind a
Sentinel the braces are only characters of the name.
"""

from __future__ import annotations


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def visitor(self, site: str, visitor: str, kind: str) -> str:
        return f"{self.prefix}:{{{site}:{visitor}}}:{kind}"

    def site(self, site: str, kind: str, name: str) -> str:
        return f"{self.prefix}:{{{site}}}:{kind}:{name}"

    def audience(self, site: str, audience: str, part: str) -> str:
        # "=" never appears in a visitor's tag: the two families cannot share a name.
        return f"{self.prefix}:{{{site}:audience={audience}}}:{part}"

    def delivery(self, delivery_id: str) -> str:
        return f"{self.prefix}:{{deliveries}}:{delivery_id}"

    @property
    def deliveries_due(self) -> str:
        return f"{self.prefix}:{{deliveries}}:due"

    def api_key(self, digest: str) -> str:
        return f"{self.prefix}:api-key:{digest}"

    @property
    def settings(self) -> str:
        return f"{self.prefix}:settings"

    def channel(self, node: str) -> str:
        return f"{self.prefix}:node:{node}"
