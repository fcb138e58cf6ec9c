"""A business event referred to the process holding the visitor's socket (live.referral),
against our own redis-server: the holder's answer comes back (a failure too); a holder
that hears it and stays silent is taken over, and then cannot apply it late; a holder
that took it and stays silent leaves the asker undecided (503), never deciding it a
second time."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import run
from popin.core.rules.campaign import parse_document
from popin.core.rules.engine import RuleSet
from popin.core.rules.yamlsource import load
from popin.core.site import Site
from popin.core.wire.events import Custom, Hello, PopinStatus
from popin.live import referral
from popin.live.hub import Hub
from popin.live.referral import Referrals, Refused, Undecided
from popin.stores.backends import open_store
from popin.stores.connection import connect
from popin.stores.keyspace import Keys

EVENT = {"name": "signup", "props": {}, "claim": None}


async def heard(pubsub: Any) -> dict[str, Any]:
    """The next message on a subscription."""
    while True:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
        if message is not None:
            found: dict[str, Any] = orjson.loads(message["data"])
            return found


def test_referrals_between_two_nodes(redis_url: str,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(referral, "REFER_WAIT", 0.3)
    monkeypatch.setattr(referral, "TAKEN_WAIT", 0.3)

    async def scenario() -> None:
        client, prefix = connect(f"{redis_url}?prefix=referral-{uuid.uuid4().hex}")
        keys = Keys(prefix)
        asker, holder = Referrals(client, keys, "asker"), Referrals(client, keys, "holder")
        # Nobody listening on the holder's channel: the asker decides at once.
        assert await asker.refer(["holder"], "demo", "v1", EVENT, None) is None
        async with client.pubsub() as on_holder, client.pubsub() as on_asker:
            await on_holder.subscribe(keys.channel("holder"))
            await on_asker.subscribe(keys.channel("asker"))

            # The holder decides and answers.
            asked = asyncio.create_task(asker.refer(["holder"], "demo", "v1", EVENT, 1.0))
            request = await heard(on_holder)
            assert (request["event"], request["from"], request["received"]) == (
                EVENT, "asker", 1.0)
            assert await holder.take("demo", "v1", request["id"])
            await holder.answer("asker", request["id"], {"shown_live": 1, "queued": 0})
            answer = await heard(on_asker)
            asker.answered(answer["id"], answer["outcome"])
            assert await asked == {"shown_live": 1, "queued": 0}

            # The holder could not store it: refused at once, as a local failure is.
            asked = asyncio.create_task(asker.refer(["holder"], "demo", "v1", EVENT, None))
            failing = await heard(on_holder)
            assert await holder.take("demo", "v1", failing["id"])
            await holder.answer("asker", failing["id"], {"failed": True})
            answer = await heard(on_asker)
            asker.answered(answer["id"], answer["outcome"])
            with pytest.raises(Refused):
                await asked

            # Heard and never answered: taken back, and the holder, late, finds it taken.
            assert await asker.refer(["holder"], "demo", "v1", EVENT, None) is None
            late = await heard(on_holder)
            assert not await holder.take("demo", "v1", late["id"])
            assert asker.taken_back == 1

            # Taken by the holder, then silence: undecided, and not taken back.
            asked = asyncio.create_task(asker.refer(["holder"], "demo", "v1", EVENT, None))
            silent = await heard(on_holder)
            assert await holder.take("demo", "v1", silent["id"])
            with pytest.raises(Undecided):
                await asked
            assert asker.taken_back == 1
        await client.aclose()

    run(scenario())


WELCOME = """
rules:
  - id: welcome
    category: transactional
    trigger: {event: signup}
    popin: {title: "Welcome", body: "<p>once a session</p>"}
"""


class Frames:
    """A widget's socket that keeps what it was sent."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.gone = False

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    async def close(self, code: int) -> None:
        raise AssertionError(f"closed with {code}")


async def welcoming_hub(tmp_path: Path) -> tuple[Hub, Any]:
    """A hub for site "demo" whose one rule welcomes a visitor once a session; its store."""
    store = open_store(f"sqlite:///{tmp_path / 'popin.db'}")
    await store.open()
    rules = RuleSet(parse_document(load(WELCOME, "rules.yaml"), "rules.yaml"))
    return Hub(store, {"demo": rules}, {"demo": Site("demo")}), store


def test_a_push_decided_elsewhere_counts_toward_the_session_cap(tmp_path: Path) -> None:
    """When the process holding the socket did not answer in time, the other decided and
    relayed the pop-in: shown here, it counts toward this session's cap of one."""
    async def scenario() -> None:
        hub, store = await welcoming_hub(tmp_path)
        rules, site = hub.rules_of("demo"), hub.sites["demo"]
        session = await hub.open(site, Hello("visitor-1", "session-1", "https://x.test/"),
                                 "Mozilla/5.0")
        socket = Frames()
        hub.attach(session, socket)
        relayed = {"type": "show", "id": "decided-elsewhere", "rule": "welcome",
                   "html": "<p>once a session</p>", "at": 1.0, "expires": 9e9}
        assert await hub.deliver("demo", "visitor-1", [relayed]) == 1
        assert socket.sent == [relayed]
        session.handle(PopinStatus("decided-elsewhere", "clicked"), rules, 2.0)
        outcome = await hub.business_event(site, "visitor-1", Custom("signup",
                                                                     confirmed=True))
        assert (outcome.shown_live, outcome.queued) == (0, 0)
        assert socket.sent == [relayed], "welcomed twice in one session"
        await store.close()

    run(scenario())


def test_a_relayed_push_goes_to_one_tab_of_the_visitor(tmp_path: Path) -> None:
    """Two tabs of one visitor on this process: a push relayed from another process is
    shown in the tab that spoke last, not in both."""
    async def scenario() -> None:
        hub, store = await welcoming_hub(tmp_path)
        site = hub.sites["demo"]
        tabs = []
        for number in (1, 2):
            session = await hub.open(site, Hello("visitor-1", f"session-{number}",
                                                 "https://x.test/"), "Mozilla/5.0")
            socket = Frames()
            hub.attach(session, socket)
            tabs.append((session, socket))
        # The first tab opened first but was used last.
        tabs[0][0].facts.now = tabs[1][0].facts.now + 5
        relayed = {"type": "show", "id": "decided-elsewhere", "rule": "welcome",
                   "html": "<p>once a session</p>", "at": 1.0, "expires": 9e9}
        assert await hub.deliver("demo", "visitor-1", [relayed]) == 1
        assert [socket.sent for _session, socket in tabs] == [[relayed], []]
        await store.close()

    run(scenario())


class Closing(Frames):
    """A tab the visitor just closed: what is sent to it is lost."""

    async def send(self, message: dict[str, Any]) -> None:
        self.gone = True


def test_a_push_for_a_tab_closing_as_it_is_sent_goes_to_the_visitors_other_tab(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        hub, store = await welcoming_hub(tmp_path)
        site = hub.sites["demo"]
        other, closing = Frames(), Closing()
        for number, socket in ((1, other), (2, closing)):
            session = await hub.open(site, Hello("visitor-1", f"session-{number}",
                                                 "https://x.test/"), "Mozilla/5.0")
            hub.attach(session, socket)
        outcome = await hub.business_event(site, "visitor-1", Custom("signup",
                                                                     confirmed=True))
        assert (outcome.shown_live, outcome.queued) == (1, 0)
        assert [message["rule"] for message in other.sent] == ["welcome"]
        await store.close()

    run(scenario())
