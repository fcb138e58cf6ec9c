"""Live sessions of every site, the current rules, and the store behind them.

A session outlives its socket for a while, so a widget that reconnects (network
blip, next page of the same visit) resumes the same session and its caps.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..core.preview import PreviewError, preview_message
from ..core.rules.engine import RuleSet
from ..core.rules.variants import split_key
from ..core.session import Result, Session
from ..core.site import CONSENT_LEVELS, Site
from ..core.visitor.agent import Agent, Geo, agent_of
from ..core.visitor.facts import Facts, landing_facts
from ..core.visitor.identity import apply_traits, merge_into
from ..core.visitor.profile import Profile
from ..core.wire.events import Custom, FormSubmit, Hello, Scalar
from ..features.appointments.answers import AddressQuota, answer_form, fill_slots
from ..features.appointments.links import Links
from ..features.previews import PreviewLinks
from ..stores.audiences import Tagging, identifiers
from ..stores.contract import Store
from ..stores.deliveries import Delivery
from ..stores.roundtrips import timed
from ..stores.writebehind import PendingWrites
from .metrics import Metrics

log = logging.getLogger("popin.hub")

# A session idle this long is over: the widget starts a new one after 30 minutes too.
SESSION_IDLE_SECONDS = 30 * 60

SessionKey = tuple[str, str, str]
EMPTY_RULES = RuleSet()
VisitorKey = tuple[str, str]
# How long an idempotency key of the API answers "duplicate" once its event is stored.
IDEMPOTENCY_TTL = 7 * 86400.0
# How long a waiting push sent again at hello belongs to the tab that asked first: tabs
# opened together ask within it; a tab reconnecting later may have it again.
RESEND_CLAIM_SECONDS = 3.0
# Pop-ins remembered per visitor with a tab open here, for which tab shows them.
MAX_SHOWN_TRACKED = 64
Claim = tuple[str, str]
# Close code telling a widget its visitor was erased: forget the ids, do not come back.
CLOSE_ERASED = 4010


class Socket(Protocol):
    """A live widget connection, as the endpoint gives it to the hub."""

    # The peer is gone: what is sent now is dropped (the outbox keeps pop-ins).
    gone: bool

    async def send(self, message: dict[str, Any]) -> None: ...

    async def close(self, code: int) -> None: ...


class Peers(Protocol):
    """The other processes, when there are (live.relay): where a visitor's sockets are."""

    def present(self, site: str, visitor: str) -> None: ...

    def absent(self, site: str, visitor: str) -> None: ...

    async def arrive(self, site: str, visitor: str) -> None: ...

    async def publish(self, site: str, visitor: str, messages: list[dict[str, Any]],
                      received: float | None = None) -> bool: ...

    async def refer(self, site: str, visitor: str, event: dict[str, Any],
                    received: float | None = None) -> dict[str, Any] | None: ...

    async def save_session(self, site: str, visitor: str, session: str,
                           snapshot: dict[str, Any], ttl: float) -> None: ...

    async def load_session(self, site: str, visitor: str,
                           session: str) -> dict[str, Any] | None: ...


class IdentityRefused(Exception):
    """An identify from the page that the site's backend did not vouch for."""


@dataclass(slots=True)
class Outcome:
    """What a business event did for one visitor."""

    visitor: str
    shown_live: int = 0
    queued: int = 0


@dataclass(slots=True)
class RuleStatus:
    """What the owner needs to know about the rules in force."""

    loaded_at: float = 0.0
    checked_at: float = 0.0
    files: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Hub:
    def __init__(self, store: Store, rules: dict[str, RuleSet], sites: dict[str, Site],
                 clock: Callable[[], float] = time.time, geo: Geo | None = None,
                 max_sessions: int = 50_000) -> None:
        self.metrics = Metrics()
        # Every store call is timed here, once, whatever the backend.
        self.store = timed(store, self.metrics.round_trip)
        # Each site's own campaigns: a rule of one site never fires, is watched for, or
        # counts on another.
        self._rules = dict(rules)
        # Bumped on every reload, so each socket sends its widget the new config once.
        self.rules_version = 0
        # All sites together (for /healthz), and each site's own (its dashboard).
        self.rule_status = RuleStatus(loaded_at=clock())
        self.site_status: dict[str, RuleStatus] = {}
        self.sites = sites
        self.clock = clock
        self.geo = geo
        # Signs appointment links; the app sets it from the configured secret.
        self.links = Links(secrets.token_urlsafe(32))
        self.previews = PreviewLinks(secrets.token_urlsafe(32))
        self.counts: Counter[str] = Counter()
        self._sessions: dict[SessionKey, Session] = {}
        # Sessions with no socket, and since when; swept after SESSION_IDLE_SECONDS.
        self._idle_since: dict[SessionKey, float] = {}
        self._connections: Counter[SessionKey] = Counter()
        # Two tabs of one visitor share one profile object, so neither overwrites the other.
        self._profiles: dict[tuple[str, str], Profile] = {}
        self._profile_sessions: Counter[tuple[str, str]] = Counter()
        self._sockets: dict[VisitorKey, dict[Socket, Session]] = {}
        # Per visitor: the socket each pop-in went to, while it is open. Tabs of one visit
        # share a session, so the session cannot tell which tab shows what.
        self._shown_on: dict[VisitorKey, dict[str, Socket]] = {}
        # Names this process's sockets in claims other processes read.
        self._node = secrets.token_hex(6)
        self.pending = PendingWrites()
        # Sessions kept in memory, live or resumable; past it the longest idle ones end.
        self.max_sessions = max_sessions
        self.address_quota = AddressQuota()
        # Per site, the rules the campaign guard paused (live.guard keeps it current).
        self._paused: dict[str, set[str]] = {}
        # Set when several processes share a Redis store: pushes reach sockets elsewhere.
        self.peers: Peers | None = None
        # Sessions whose caps or pushes awaiting reports changed since their snapshot was
        # last written: written with the next flush, so that a process killed (-9) leaves
        # its sessions' caps behind at most a second old.
        self._unsaved: set[SessionKey] = set()

    def status_of(self, site: str) -> RuleStatus:
        return self.site_status.get(site) or self.rule_status

    def rules_of(self, site: str) -> RuleSet:
        return self._rules.get(site) or EMPTY_RULES

    def set_rules(self, rules: dict[str, RuleSet]) -> None:
        """New rule sets for the sites named (others keep theirs)."""
        self._rules.update(rules)
        self.rules_version += 1

    @property
    def rule_count(self) -> int:
        """Rules in force, all sites together (a folder shared by sites counted once)."""
        return sum(len(rules) for rules in {id(r): r for r in self._rules.values()}.values())

    def paused_for(self, site: str) -> set[str]:
        """The site's paused rules: one set, shared by every session of the site."""
        return self._paused.setdefault(site, set())

    @property
    def live_connections(self) -> int:
        return sum(len(sockets) for sockets in self._sockets.values())

    def live_visitors(self, site: str) -> int:
        """Visitors of this site with a page open now."""
        return sum(1 for site_key, _visitor in self._sockets if site_key == site)

    @property
    def live_sessions(self) -> int:
        return len(self._sessions)

    async def audience_names(self, site: str) -> set[str]:
        """Audiences the rules tag into, and those that still have members or changes."""
        stored = {info.name for info in await self.store.audience_list(site)}
        return stored | set(self.rules_of(site).audience_days)

    async def open(self, site: Site, hello: Hello, user_agent: str,
                   client_ip: str | None = None) -> Session:
        """Find or start the session; `client_ip` is used for geo here and never kept."""
        key = (site.key, hello.visitor, hello.session)
        session = self._sessions.get(key)
        if session is None:
            visitor_key = (site.key, hello.visitor)
            if visitor_key not in self._profiles:
                loaded = await self._stored(*visitor_key)
                self._profiles.setdefault(visitor_key, loaded or Profile(visitor=hello.visitor))
            # Another socket of this session may have opened it while we awaited the store.
            session = self._sessions.get(key)
        if session is None:
            if len(self._sessions) >= self.max_sessions:
                self.counts["session.evicted"] += self.sweep(keep=self.max_sessions - 1)
            self._profile_sessions[visitor_key] += 1
            profile = self._profiles[visitor_key]
            utm, referrer = landing_facts(hello.url, hello.referrer)
            facts = Facts(profile, site, agent_of(user_agent),
                          self.geo.locate(client_ip) if self.geo else Facts(profile).place,
                          hello.language, utm, referrer, consent=hello.consent, gpc=hello.gpc,
                          now=self.clock(), timezone=hello.timezone, awaiting=hello.cmp,
                          paused=self.paused_for(site.key))
            session = Session(site.key, hello.session, profile, facts)
            self._sessions[key] = session
            self.counts["session.new"] += 1
            await self._continue(key, session)
        else:
            self.counts["session.resumed"] += 1
            await self._continue(key, session)
            # The visitor may have changed their mind (or their browser) since.
            session.facts.gpc = hello.gpc
            if hello.consent != "unknown":
                session.facts.consent = hello.consent
            # A new page's consent tool speaks again (the widget repeats what it said).
            session.facts.awaiting = hello.cmp
        self._connections[key] += 1
        self._idle_since.pop(key, None)
        return session

    async def _continue(self, key: SessionKey, session: Session) -> None:
        """With other processes about, the session may have gone on elsewhere since this
        process last held a socket of it: continue from the snapshot left in Redis."""
        if self.peers is None or self._connections[key] > 0:
            return
        try:
            snapshot = await self.peers.load_session(*key)
        except Exception:
            log.warning("a session's snapshot could not be read; it continues from here")
            return
        if snapshot is not None:
            session.restore(snapshot)
            self.counts["session.continued"] += 1

    async def save_sessions(self) -> None:
        """At shutdown: every session's snapshot, for the processes that stay."""
        for key in list(self._sessions):
            await self._save_session(key)

    async def save_changed_sessions(self) -> None:
        """The snapshots of the sessions that pushed or heard a report since the last call
        (every FLUSH_SECONDS, beside the flush)."""
        unsaved, self._unsaved = self._unsaved, set()
        for key in unsaved:
            await self._save_session(key)

    async def _save_session(self, key: SessionKey) -> None:
        session = self._sessions.get(key)
        if self.peers is None or session is None:
            return
        try:
            await self.peers.save_session(*key, session.snapshot(), SESSION_IDLE_SECONDS)
        except Exception:
            log.warning("a session's snapshot could not be written")

    async def prepare(self, session: Session, result: Result) -> None:
        """What a push needs from the store before it leaves (free slots)."""
        site = self.sites.get(session.site)
        if site is not None and result.messages:
            await fill_slots(self.store, site, session, result, self.clock())

    async def form(self, session: Session, event: FormSubmit, address: str = "",
                   base: str = "") -> dict[str, Any] | None:
        """Answer a form sent from a pop-in; None when no pop-in of ours has that form.
        `address` is the client's, for the per-address booking cap (memory only)."""
        rule = self.rules_of(session.site).by_id.get(
            split_key(session.pushes.get(event.push_id, ""))[0])
        site = self.sites.get(session.site)
        expected = {"lead": "assist", "book": "slots"}[event.form]
        if rule is None or site is None or rule.visual is None or rule.visual.kind != expected:
            return None
        html = await answer_form(self.store, site, session, rule.id, event.form,
                                 rule.visual.calendar, rule.visual.channels, event, self.links,
                                 address, self.address_quota, base)
        self.counts[f"form.{event.form}"] += 1
        return {"type": "update", "id": event.push_id, "html": html}

    def settled(self, session: Session, result: Result) -> bool:
        """`settle` without a coroutine for a result that needs no store call (nearly
        every event from a widget); False, having done nothing, for any other."""
        if (result.leave_audiences or result.effects or not session.facts.may_remember
                or any(audience not in result.refreshed
                       for audience, _until in result.taggings)):
            return False
        self.counts.update(result.counts)
        site, visitor = session.site, session.profile.visitor
        self._mark_unsaved(session, result)
        if result.stats:
            self.record_stats(session, result, self.clock())
        self._outbox(site, visitor, result)
        if result.profile_changed:
            self.pending.profile(site, session.profile)
        return True

    def _mark_unsaved(self, session: Session, result: Result) -> None:
        # A session that pushed or heard a report has its snapshot written with the next
        # flush (save_changed_sessions): a process killed outright then loses at most a
        # second of its caps and pushes awaiting reports. Both ways of settling mark it.
        if self.peers is not None and (result.messages or result.acks):
            self._unsaved.add((session.site, session.profile.visitor, session.id))

    def _outbox(self, site: str, visitor: str, result: Result) -> None:
        for message in result.messages:
            if message["type"] == "show":
                # Until the widget acknowledges it, a push waits here for the next socket.
                self.pending.outbox_put(site, visitor, message, message["expires"])
        for push_id in result.acks:
            self.pending.outbox_remove(site, visitor, push_id)

    async def settle(self, session: Session, result: Result) -> None:
        """Persist what a result changed: profile, outbox, acknowledgements, webhooks,
        audiences; nothing at all while the visitor's consent is needed and not given.
        What can wait a moment goes through `pending` and is written with the next flush."""
        self.counts.update(result.counts)
        site, visitor = session.site, session.profile.visitor
        self._mark_unsaved(session, result)
        now = self.clock()
        if result.stats:
            self.record_stats(session, result, now)
        if result.leave_audiences:
            left = await self.store.audience_leave(site, visitor, now)
            self.counts["audience.left"] += left
        if not session.facts.may_remember:
            refused = result.refused
            if refused is None and result.leave_audiences:
                refused = session.facts.withheld()
            if refused is not None and (
                    session.facts.site.consent != "required" or result.leave_audiences
                    or await self._stored(site, visitor) is not None):
                # The refusal replaces whatever was kept of the visitor: the levels
                # withheld, nothing learnt (not this page's cart, interests, visits). A
                # backend event finds it and neither tags them nor queues a pop-in. On a
                # "required" site a visitor never kept needs no record: nothing is
                # allowed for an unknown visitor there.
                self.pending.profile(site, Profile(visitor, withheld=list(refused)))
            return
        self._outbox(site, visitor, result)
        for call in result.effects:
            await self.store.save_delivery(Delivery.new(site, visitor, call.url, call.payload,
                                                        now))
            self.counts["webhook.queued"] += 1
        taggings = [(audience, until) for audience, until in result.taggings
                    if audience not in result.refreshed]
        if taggings:
            ids = identifiers(session.profile)
            self.counts["audience.joined"] += await self.store.audience_tag(
                site, [Tagging(visitor, audience, until, ids)
                       for audience, until in taggings], now)
        if result.profile_changed:
            self.pending.profile(site, session.profile)

    def preview(self, session: Session, token: str) -> dict[str, Any]:
        """The pop-in a signed preview link asks for, for this page only; counted nowhere.
        Raises PreviewError when the link is bad, expired, of another site, or the rule
        shows nothing."""
        found = self.previews.read(token)
        if found is None:
            raise PreviewError("the preview link is not valid or has expired")
        site, rule_id, variant = found
        rules = self.rules_of(session.site)
        rule = rules.by_id.get(rule_id)
        if site != session.site or rule is None:
            raise PreviewError("the preview link is for another site, or its rule is gone")
        self.counts["preview.shown"] += 1
        # A fresh id each time: the widget never shows the same push id twice.
        return preview_message(rule, variant, session.facts, session.page, rules,
                               secrets.token_hex(6))

    async def flush(self) -> None:
        """Write what is pending now (also done every FLUSH_SECONDS by the app), after
        any flush still writing (at shutdown: the one the app's cancelled loop began)."""
        if self.pending or self.pending.in_flight:
            await self.pending.flush(self.store)

    def record_stats(self, session: Session, result: Result, now: float) -> None:
        """Counters per site day (anonymous, so counted with or without consent), and the
        recent-events log, where the visitor id appears only if they may be remembered."""
        # The site's clock, as the session's conditions already read it for this event.
        day = session.facts.local_time.date().isoformat()
        self.pending.count(session.site, day, result.stats)
        who = session.profile.visitor if session.facts.may_remember else ""
        self.pending.log(session.site, [
            {"at": now, "rule": rule, "metric": metric, "amount": amount, "visitor": who,
             **({"why": result.cause} if result.cause and metric == "triggered" else {})}
            for rule, metric, amount in result.stats])

    async def unacknowledged(self, session: Session, socket: Socket) -> list[dict[str, Any]]:
        """The oldest push this visitor never acknowledged, to send again on `socket`
        (re)connecting; none when another tab of theirs already shows it."""
        if self.pending.has_outbox(session.site, session.profile.visitor):
            await self.flush()
        if self.peers is not None:
            # Present before the outbox is read, as the API writes the outbox before it
            # looks for presence: a push posted meanwhile is relayed here or read below.
            await self.peers.arrive(session.site, session.profile.visitor)
        waiting = await self.store.outbox_list(session.site, session.profile.visitor,
                                               self.clock())
        key = (session.site, session.profile.visitor)
        if not waiting or self._shown_elsewhere(key, waiting[0]["id"], socket):
            # Another tab of the visitor, opened at the same moment, already shows it.
            return []
        if self.peers is not None:
            # The same for a tab on another process: the first socket to claim the push
            # sends it. Unacknowledged, it is anyone's once the claim lapses.
            claimed = await self.store.claim(session.site, [
                (f"resend:{session.profile.visitor}:{waiting[0]['id']}",
                 f"{self._node}.{id(socket):x}")], RESEND_CLAIM_SECONDS)
            if claimed != ["claimed"] and claimed != ["duplicate"]:
                return []
            if self._shown_elsewhere(key, waiting[0]["id"], socket):
                return []
        self.shown_on(session, socket, waiting[0])
        session.adopt(waiting[0])
        self.counts["outbox.resent"] += 1
        return [waiting[0]]

    def shown_on(self, session: Session, socket: Socket, message: dict[str, Any]) -> None:
        """`message`, a pop-in, went to `socket`: no other tab is sent it again."""
        if message["type"] != "show":
            return
        shown = self._shown_on.setdefault((session.site, session.profile.visitor), {})
        shown[message["id"]] = socket
        if len(shown) > MAX_SHOWN_TRACKED:
            del shown[next(iter(shown))]

    def _shown_elsewhere(self, key: VisitorKey, push_id: str, socket: Socket) -> bool:
        holder = self._shown_on.get(key, {}).get(push_id)
        return (holder is not None and holder is not socket and not holder.gone
                and holder in self._sockets.get(key, {}))

    def _front(self, site: str, visitor: str) -> tuple[Socket, Session] | None:
        """The visitor's open socket here that spoke last: the tab they are using. A push
        goes to that one only; every open tab showing it would be one pop-in shown N
        times."""
        live = [item for item in self._sockets.get((site, visitor), {}).items()
                if not item[0].gone]
        if not live:
            return None
        # max keeps the first of equals; reversed, the socket opened last wins a tie.
        return max(reversed(live), key=lambda item: item[1].facts.now)

    async def _send_to_front(self, site: str, visitor: str, messages: list[dict[str, Any]],
                             decided_by: Session | None,
                             front: tuple[Socket, Session] | None) -> Session | None:
        """Send to the tab in use, or if it closed meanwhile (its send failing), to the
        next; the session that got them, or None when no tab is open here."""
        while front is not None:
            socket, session = front
            for message in messages:
                if session is not decided_by:
                    session.adopt(message)
                self.shown_on(session, socket, message)
                await socket.send(message)
            if not socket.gone:
                return session
            front = self._front(site, visitor)
        return None

    def attach(self, session: Session, socket: Socket) -> None:
        key = (session.site, session.profile.visitor)
        if key not in self._sockets and self.peers is not None:
            self.peers.present(*key)
        self._sockets.setdefault(key, {})[socket] = session

    def detach(self, session: Session, socket: Socket) -> None:
        key = (session.site, session.profile.visitor)
        sockets = self._sockets.get(key, {})
        sockets.pop(socket, None)
        if not sockets:
            self._shown_on.pop(key, None)
        if not sockets and self._sockets.pop(key, None) is not None and self.peers is not None:
            self.peers.absent(*key)

    async def hand_over(self, session: Session) -> None:
        """The visitor's last socket here closed: with other processes about, what it
        changed (acknowledgements, profile) is written now, so that the process they
        reconnect to does not send an acknowledged pop-in again."""
        key = (session.site, session.profile.visitor)
        if self.peers is None:
            return
        if (*key, session.id) not in self._connections:
            await self._save_session((*key, session.id))
        if key in self._sockets:
            return
        try:
            await self.pending.write_now(self.store, *key)
        except Exception:
            log.warning("a closed socket's writes wait for the next flush (store failing)")

    async def deliver(self, site: str, visitor: str, messages: list[dict[str, Any]],
                      received: float | None = None) -> int:
        """Pushes another process relayed for a visitor whose sockets are here; how many
        sockets they were sent on (none: the outbox keeps them for the next visit).
        `received`: when the other process's API took the event, for the latency."""
        sent = 0
        session = await self._send_to_front(site, visitor, messages, None,
                                            self._front(site, visitor))
        if session is not None:
            for message in messages:
                if message["type"] == "show":
                    # Decided elsewhere (this process did not answer the referred event
                    # in time): on screen here all the same, so it counts toward the
                    # session's cap.
                    session.shown[message["rule"]] = session.shown.get(message["rule"], 0) + 1
            if received is not None:
                self.metrics.pushed("relay", received, messages)
            sent = 1
        self.counts["relay.delivered" if sent else "relay.missed"] += 1
        return sent

    async def resend_waiting(self) -> None:
        """The relay's channel was lost a while: pushes published for visitors held here
        meanwhile wait in their outboxes, and are sent again as at hello."""
        for sockets in list(self._sockets.values()):
            for socket, session in list(sockets.items()):
                try:
                    for push in await self.unacknowledged(session, socket):
                        await socket.send(push)
                except Exception:
                    log.warning("a waiting push is sent on the visitor's next reconnect")

    async def business_event(self, site: Site, visitor: str, event: Custom,
                             received: float | None = None,
                             claim: Claim | None = None) -> Outcome:
        """An event from the site's backend: live if the visitor is connected, else the
        pop-in waits in their outbox for the next visit. The API acknowledges what this
        returns, so the outbox and profile it changed are in the store when it returns
        (webhooks and audiences always are); it raises when the store refuses them, and
        live.referral.Undecided when the process holding the visitor took the event and
        did not say what it did. `received` (Metrics.now) is when the API took the
        request: pushes are timed from it. `claim`, the pending idempotency claim (key,
        digest) of the event, is committed by the process that stored the event."""
        received = self.metrics.now() if received is None else received
        if self.peers is not None and not self.holds(site.key, visitor):
            # Caps, quiet periods and the pop-in on screen are in the session of the
            # process holding the socket: that process decides (live.referral).
            referred = await self.peers.refer(site.key, visitor, {
                "name": event.name, "props": event.props, "claim": claim}, received)
            if referred is not None:
                self.counts["relay.referred"] += 1
                return Outcome(visitor, int(referred["shown_live"]), int(referred["queued"]))
        return await self._decide(site, visitor, event, received, claim=claim)

    def holds(self, site: str, visitor: str) -> bool:
        """Whether a socket of this visitor is open on this process."""
        return bool(self._sockets.get((site, visitor)))

    async def referred_event(self, site: str, visitor: str, event: dict[str, Any],
                             received: float | None) -> dict[str, int]:
        """A business event another process referred here, where the visitor's socket is:
        decided with the live session, and stored before the answer goes back."""
        claim = event.get("claim")
        outcome = await self._decide(self.sites[site], visitor, Custom(
            str(event["name"]), dict(event["props"]), confirmed=True),
            self.metrics.now() if received is None else received, "relay",
            (str(claim[0]), str(claim[1])) if claim else None)
        return {"shown_live": outcome.shown_live, "queued": outcome.queued}

    async def _decide(self, site: Site, visitor: str, event: Custom, received: float,
                      path: str = "api", claim: Claim | None = None) -> Outcome:
        outcome = Outcome(visitor)
        front = self._front(site.key, visitor)
        session = front[1] if front else self._idle_session(site.key, visitor)
        if session is None:
            stored = await self._stored(site.key, visitor)
            profile = stored or Profile(visitor)
            # A stored profile means the visitor let us remember them, but for the consent
            # levels they withheld when last seen.
            kept = {level: "denied" if level in profile.withheld else "granted"
                    for level in CONSENT_LEVELS} if stored else {}
            session = Session(site.key, f"backend-{secrets.token_hex(8)}", profile,
                              Facts(profile, site, Agent("other"), now=self.clock(),
                                    signals={"kept": kept} if kept else {},
                                    paused=self.paused_for(site.key)))
        result = session.handle(event, self.rules_of(site.key), self.clock())
        await self.prepare(session, result)
        await self.settle(session, result)
        shown = [message for message in result.messages if message["type"] == "show"]
        try:
            await self.pending.write_now(self.store, site.key, session.profile.visitor)
        except Exception:
            # Refused (the API answers 503): its pop-ins must not show up with a retry's.
            for message in shown:
                self.pending.outbox_drop(site.key, session.profile.visitor, message["id"])
            raise
        if claim is not None:
            await self._commit(site.key, claim)
        # The socket that decided, or if it closed meanwhile, the visitor's other tab.
        if front is None or front[0] not in self._sockets.get((site.key, visitor), {}):
            front = self._front(site.key, visitor)
        live = bool(shown) and await self._send_to_front(
            site.key, visitor, shown, session, front) is not None
        if live:
            self.metrics.pushed(path, received, shown)
        elsewhere = False
        if shown and not live and self.peers is not None:
            # Already in the outbox: a relay that fails only makes it wait for the next visit.
            try:
                elsewhere = await self.peers.publish(site.key, visitor, shown, received)
            except Exception:
                log.warning("a push could not be relayed to other processes; it waits in "
                            "the outbox")
            self.counts["relay.published" if elsewhere else "relay.nobody"] += 1
        outcome.shown_live = len(shown) if live or elsewhere else 0
        # Nothing waits in the outbox of a visitor who may not be remembered (settle).
        outcome.queued = (0 if live or elsewhere or not session.facts.may_remember
                          else len(shown))
        return outcome

    async def _commit(self, site: str, claim: Claim) -> None:
        """The event is stored: its key now answers "duplicate". A second step, not one
        transaction with the outbox (another hash tag on a cluster): a process that dies
        in between leaves the claim pending, and the retry after its lease applies the
        event again; a pop-in twice rather than none."""
        try:
            await self.store.commit(site, [claim], IDEMPOTENCY_TTL)
        except Exception:
            # Stored all the same, and the answer says so; the claim lapses.
            log.exception("an idempotency key could not be committed")

    def _idle_session(self, site: str, visitor: str) -> Session | None:
        for (site_key, visitor_id, _), session in self._sessions.items():
            if site_key == site and visitor_id == visitor:
                return session
        return None

    async def identify(self, site: Site, visitor: str, user_id: str,
                       traits: dict[str, Scalar], vouched: bool = True) -> tuple[str, list[str]]:
        """Link the site's user to this visitor; a second device converges on the first
        visitor's profile. Traits are checked before anything changes. Returns the
        visitor id to use from now on, and the traits stored.

        Only a claim the site's backend vouched for (its API, or a valid user_hash) may
        reach a profile linked before; an unvouched one may at most link a user id that
        nobody holds to a visitor that is nobody yet, else `IdentityRefused`."""
        apply_traits(Profile(visitor), traits)  # raises TraitError before anything changes
        profile = self._profiles.get((site.key, visitor)) or await self._stored(
            site.key, visitor) or Profile(visitor)
        if not vouched and profile.user_id not in ("", user_id):
            raise IdentityRefused("this visitor is already another user")
        kept_id = await self.store.link_user(site.key, user_id, visitor)
        if kept_id != visitor and not vouched:
            # Someone holds this user id: the page alone cannot prove it is them.
            raise IdentityRefused("this user id needs the site's user_hash")
        kept = profile
        if kept_id != visitor:
            kept = self._profiles.get((site.key, kept_id)) or await self._stored(
                site.key, kept_id) or Profile(kept_id)
            if kept.claimed:
                # The id was claimed without proof ("new_users"); its vouched owner is
                # here: the claim is revoked and its visitor forgotten, never merged into.
                await self.forget(site.key, kept_id)
                kept_id = await self.store.link_user(site.key, user_id, visitor)
                kept = profile
                self.counts["identity.claim_revoked"] += 1
        if kept_id != visitor:
            merge_into(kept, profile)
            # Waits for a flush in progress, so the second device's profile cannot be
            # written back after it was merged away.
            await self.pending.erase(self.store, site.key, visitor)
            await self.store.link_user(site.key, user_id, kept_id)
            # The kept visitor carries the second device's audiences from now on.
            now = self.clock()
            await self.store.audience_tag(site.key, [
                Tagging(kept_id, audience, until, identifiers(kept))
                for audience, until in kept.audiences.items() if until > now], now)
            self._rekey(site.key, visitor, kept)
            profile = kept
            self.counts["identity.merged"] += 1
        profile.user_id = user_id
        profile.claimed = not vouched
        stored = apply_traits(profile, traits)
        await self.store.save_profile(site.key, profile)
        if profile.audiences:
            await self.store.audience_update_ids(site.key, kept_id, identifiers(profile))
        return kept_id, stored

    async def knows(self, site: str, visitor: str) -> bool:
        """Whether popin has met this visitor: a session in memory or a kept profile."""
        return (site, visitor) in self._profiles or await self._stored(site, visitor) is not None

    async def _stored(self, site: str, visitor: str) -> Profile | None:
        """The profile as the store will have it after the next flush."""
        return self.pending.profiles.get((site, visitor)) or await self.store.load_profile(
            site, visitor)

    def _rekey(self, site: str, old: str, kept: Profile) -> None:
        """Live sessions of the second device now work on the kept profile."""
        for key in [key for key in self._sessions if key[:2] == (site, old)]:
            session = self._sessions.pop(key)
            session.profile = session.facts.profile = kept
            new_key = (site, kept.visitor, key[2])
            self._sessions[new_key] = session
            if key in self._idle_since:
                self._idle_since[new_key] = self._idle_since.pop(key)
            if key in self._connections:
                self._connections[new_key] = self._connections.pop(key)
            self._profile_sessions[(site, kept.visitor)] += 1
        self._profiles[(site, kept.visitor)] = kept
        self._profiles.pop((site, old), None)
        self._profile_sessions.pop((site, old), None)
        sockets = self._sockets.pop((site, old), {})
        if sockets and self.peers is not None:
            self.peers.absent(site, old)
            self.peers.present(site, kept.visitor)
        self._sockets.setdefault((site, kept.visitor), {}).update(sockets)

    async def forget(self, site: str, visitor: str) -> None:
        """Erase a visitor everywhere, and end their live sessions so nothing comes back."""
        if self._sockets.get((site, visitor)) and self.peers is not None:
            self.peers.absent(site, visitor)
        for socket in list(self._sockets.pop((site, visitor), {})):
            await socket.close(CLOSE_ERASED)
        for key in [key for key in self._sessions if key[:2] == (site, visitor)]:
            del self._sessions[key]
            self._idle_since.pop(key, None)
            self._connections.pop(key, None)
        self._profiles.pop((site, visitor), None)
        self._profile_sessions.pop((site, visitor), None)
        await self.pending.erase(self.store, site, visitor)
        self.counts["visitor.erased"] += 1

    def release(self, session: Session) -> None:
        key = (session.site, session.profile.visitor, session.id)
        self._connections[key] -= 1
        if self._connections[key] <= 0:
            del self._connections[key]
            self._idle_since[key] = self.clock()
            # With its last page gone, nothing of this session is on screen any more.
            session.open_push = None

    def sweep(self, keep: int | None = None) -> int:
        """End sessions idle for too long, and past `keep` sessions in all the idle ones
        that waited longest (a stranger can make new visitor ids without end; each
        session costs memory until it ends); return how many ended."""
        deadline = self.clock() - SESSION_IDLE_SECONDS
        expired = [key for key, since in self._idle_since.items() if since < deadline]
        if keep is not None and len(self._sessions) - len(expired) > keep:
            # _idle_since keeps insertion order: the first ones have waited longest.
            excess = len(self._sessions) - len(expired) - keep
            gone = set(expired)
            expired += [key for key in self._idle_since if key not in gone][:excess]
        for key in expired:
            del self._idle_since[key]
            del self._sessions[key]
            visitor_key = key[:2]
            self._profile_sessions[visitor_key] -= 1
            if self._profile_sessions[visitor_key] <= 0:
                del self._profile_sessions[visitor_key]
                del self._profiles[visitor_key]
        return len(expired)
