"""Audience memberships behind the store contract: the embedded file and a real Redis."""

from __future__ import annotations

import random
import time

from conftest import StoreFactory, run
from popin.stores.audiences import DAY, RETENTION_SECONDS, Member, Tagging
from popin.stores.contract import Store

T0 = 1_780_000_000.0  # 2026-05-28


def tag(visitor: str, until: float, audience: str = "skiers",
        ids: dict[str, str] | None = None) -> Tagging:
    return Tagging(visitor, audience, until, ids or {})


async def all_changed(store: Store, audience: str, after_seq: int) -> list[Member]:
    found: list[Member] = []
    while page := await store.audience_changed("demo", audience, after_seq, 7):
        found += page
        after_seq = page[-1].last_seq
    return found


async def all_members(store: Store, audience: str) -> list[str]:
    found: list[str] = []
    after = ""
    while page := await store.audience_members("demo", audience, after, 7):
        found += [member.visitor for member in page]
        after = page[-1].visitor
    return found


async def seq_of(store: Store, audience: str = "skiers") -> int:
    return next((info.seq for info in await store.audience_list("demo")
                 if info.name == audience), 0)


def test_tagging_joins_once_and_refreshes_the_end(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        joined = await store.audience_tag("demo", [tag("v1", T0 + 30 * DAY, ids={"email": "e1"}),
                                                   tag("v2", T0 + 30 * DAY)], T0)
        assert joined == 2
        # A later qualifying event pushes the end further: no new join, no change reported.
        assert await store.audience_tag("demo", [tag("v1", T0 + 40 * DAY)], T0 + DAY) == 0
        # An earlier end never shortens a membership.
        assert await store.audience_tag("demo", [tag("v1", T0 + 2 * DAY)], T0 + DAY) == 0
        [info] = await store.audience_list("demo")
        assert (info.name, info.size, info.seq) == ("skiers", 2, 2)
        [v1, v2] = await store.audience_members("demo", "skiers", "", 10)
        assert (v1.visitor, v1.joined, v1.expires, v1.ended) == ("v1", T0, T0 + 40 * DAY, 0.0)
        assert v1.ids == {} and v2.visitor == "v2", "ids follow the latest tagging"
        assert await store.audience_list("other-site") == []
        await store.close()

    run(scenario())


def test_memberships_expire_by_themselves(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        await store.audience_tag("demo", [tag("short", T0 + DAY), tag("long", T0 + 9 * DAY)], T0)
        assert await store.audience_expire("demo", T0 + 2 * DAY) == 1
        assert await all_members(store, "skiers") == ["long"]
        ended = [m for m in await all_changed(store, "skiers", 2) if m.visitor == "short"]
        assert ended[0].ended == T0 + DAY, "it ended when its time was up, not at the sweep"
        # Tagged again after it lapsed: a new membership, a new join.
        assert await store.audience_tag("demo", [tag("short", T0 + 5 * DAY)], T0 + 3 * DAY) == 1
        assert await all_members(store, "skiers") == ["long", "short"]
        sizes = await store.audience_sizes("demo", "skiers")
        assert sizes == [("2026-05-28", 2), ("2026-05-30", 1), ("2026-05-31", 2)]
        await store.close()

    run(scenario())


def test_an_unswept_lapse_still_counts_as_a_leave_before_the_next_join(
        make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        await store.audience_tag("demo", [tag("v1", T0 + DAY)], T0)
        start = await seq_of(store)
        # No sweep ran; tagged again a week later.
        assert await store.audience_tag("demo", [tag("v1", T0 + 9 * DAY)], T0 + 7 * DAY) == 1
        [member] = await all_changed(store, "skiers", 0)
        assert len(member.changes) == 3, "join, the lapse, join again"
        assert member.member_at(start) and member.member_at(await seq_of(store))
        assert member.change_between(start, await seq_of(store)) is None
        assert member.joined == T0 + 7 * DAY
        await store.close()

    run(scenario())


def test_incremental_deltas_are_exact_between_any_two_cursors(
        make_store: StoreFactory) -> None:
    """A random history against a model: for every pair of cursors, the members that
    joined and left in between are exactly the difference of the two memberships."""

    async def scenario() -> None:
        store = make_store()
        rng = random.Random(7)
        visitors = [f"visitor-{n:02d}" for n in range(25)]
        model: dict[str, float] = {}  # visitor -> end of membership
        now = T0
        checkpoints: list[tuple[int, set[str]]] = []
        for _step in range(160):
            now += rng.choice([60.0, 3600.0, DAY / 2])
            action = rng.random()
            visitor = rng.choice(visitors)
            if action < 0.6:
                until = now + rng.choice([DAY / 4, DAY, 3 * DAY])
                await store.audience_tag("demo", [tag(visitor, until)], now)
                if model.get(visitor, 0.0) > now:
                    model[visitor] = max(model[visitor], until)
                else:
                    model[visitor] = until
            elif action < 0.75:
                await store.audience_leave("demo", visitor, now)
                model.pop(visitor, None)
            elif action < 0.9:
                await store.audience_expire("demo", now)
            else:
                # An export: sweep first, then take the cursor.
                await store.audience_expire("demo", now)
                members = {v for v, until in model.items() if until > now}
                assert set(await all_members(store, "skiers")) == members
                checkpoints.append((await seq_of(store), members))
        assert len(checkpoints) >= 8
        for i, (since, before) in enumerate(checkpoints):
            rows = await all_changed(store, "skiers", since)
            for until, after in checkpoints[i + 1:]:
                joined = {m.visitor for m in rows if m.change_between(since, until) == "joined"}
                left = {m.visitor for m in rows if m.change_between(since, until) == "left"}
                assert joined == after - before
                assert left == before - after
        await store.close()

    run(scenario())


def test_leaving_erasure_and_new_identifiers(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        # Erasure happens now, on the real clock.
        T0 = time.time()
        ids = {"user_id": "u-1", "email": "a" * 64}
        await store.audience_tag("demo", [tag("v1", T0 + DAY, "skiers", ids),
                                          tag("v1", T0 + DAY, "waxers", ids),
                                          tag("v2", T0 + DAY, "skiers")], T0)
        await store.audience_update_ids("demo", "v1", {**ids, "phone": "b" * 64})
        [v1, _v2] = await store.audience_members("demo", "skiers", "", 10)
        assert v1.ids["phone"] == "b" * 64
        assert await store.audience_leave("demo", "v2", T0 + 60) == 1
        assert await store.audience_leave("demo", "v2", T0 + 61) == 0
        before = await seq_of(store)
        await store.erase_visitor("demo", "v1")
        assert await all_members(store, "skiers") == []
        changed = await all_changed(store, "skiers", before)
        [erased] = [m for m in changed if m.change_between(before, await seq_of(store))]
        assert erased.visitor.startswith("erased-"), "the ad platforms are told to remove it"
        assert erased.ids == {"email": "a" * 64, "phone": "b" * 64}, "only hashed contacts remain"
        everything = await all_changed(store, "skiers", 0) + await all_changed(store, "waxers", 0)
        assert "v1" not in {m.visitor for m in everything}
        # After the retention period even that is gone.
        await store.audience_expire("demo", T0 + RETENTION_SECONDS + 2 * DAY)
        assert await all_changed(store, "skiers", 0) == []
        await store.close()

    run(scenario())
