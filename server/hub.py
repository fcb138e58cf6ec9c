"""Live sessions of every site, the current rules, and the store behind them.

A session outlives its socket for a while, so a widget that reconnects (network
blip, next page of the same visit) resumes the same session and its caps.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from .agent import Geo, agent_of
from .config import Site
from .engine import RuleSet
from .events import Hello
from .facts import Facts, landing_facts
from .profile import Profile
from .session import Result, Session
from .store import Store

log = logging.getLogger("popin.hub")

# A session idle this long is over: the widget starts a new one after 30 minutes too.
SESSION_IDLE_SECONDS = 30 * 60

SessionKey = tuple[str, str, str]


@dataclass(slots=True)
class RuleStatus:
    """What the owner needs to know about the rules in force."""

    loaded_at: float = 0.0
    checked_at: float = 0.0
    files: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Hub:
    def __init__(self, store: Store, rules: RuleSet, sites: dict[str, Site],
                 clock: Callable[[], float] = time.time, geo: Geo | None = None) -> None:
        self.store = store
        self._rules = rules
        # Bumped on every reload, so each socket sends its widget the new config once.
        self.rules_version = 0
        self.rule_status = RuleStatus(loaded_at=clock())
        self.sites = sites
        self.clock = clock
        self.geo = geo
        self.counts: Counter[str] = Counter()
        self._sessions: dict[SessionKey, Session] = {}
        # Sessions with no socket, and since when; swept after SESSION_IDLE_SECONDS.
        self._idle_since: dict[SessionKey, float] = {}
        self._connections: Counter[SessionKey] = Counter()
        # Two tabs of one visitor share one profile object, so neither overwrites the other.
        self._profiles: dict[tuple[str, str], Profile] = {}
        self._profile_sessions: Counter[tuple[str, str]] = Counter()

    @property
    def rules(self) -> RuleSet:
        return self._rules

    @rules.setter
    def rules(self, rules: RuleSet) -> None:
        self._rules = rules
        self.rules_version += 1

    @property
    def live_sessions(self) -> int:
        return len(self._sessions)

    async def open(self, site: Site, hello: Hello, user_agent: str,
                   client_ip: str | None = None) -> Session:
        """Find or start the session; `client_ip` is used for geo here and never kept."""
        key = (site.key, hello.visitor, hello.session)
        session = self._sessions.get(key)
        if session is None:
            visitor_key = (site.key, hello.visitor)
            if visitor_key not in self._profiles:
                loaded = await self.store.load_profile(*visitor_key)
                self._profiles.setdefault(visitor_key, loaded or Profile(visitor=hello.visitor))
            # Another socket of this session may have opened it while we awaited the store.
            session = self._sessions.get(key)
        if session is None:
            self._profile_sessions[visitor_key] += 1
            profile = self._profiles[visitor_key]
            utm, referrer = landing_facts(hello.url, hello.referrer)
            facts = Facts(profile, site, agent_of(user_agent),
                          self.geo.locate(client_ip) if self.geo else Facts(profile).place,
                          hello.language, utm, referrer, gpc=hello.gpc, now=self.clock())
            session = Session(site.key, hello.session, profile, facts)
            self._sessions[key] = session
            self.counts["session.new"] += 1
        else:
            self.counts["session.resumed"] += 1
        self._connections[key] += 1
        self._idle_since.pop(key, None)
        return session

    async def settle(self, session: Session, result: Result) -> None:
        self.counts.update(result.counts)
        for call in result.effects:
            # Delivery (signed, queued, retried) is the webhook queue's job; see issue 4.
            self.counts["webhook.requested"] += 1
            log.info("webhook requested by rule %s to %s", call.rule, call.url)
        if result.profile_changed:
            await self.store.save_profile(session.site, session.profile)

    def release(self, session: Session) -> None:
        key = (session.site, session.profile.visitor, session.id)
        self._connections[key] -= 1
        if self._connections[key] <= 0:
            del self._connections[key]
            self._idle_since[key] = self.clock()

    def sweep(self) -> int:
        """End sessions idle for too long; return how many ended."""
        deadline = self.clock() - SESSION_IDLE_SECONDS
        expired = [key for key, since in self._idle_since.items() if since < deadline]
        for key in expired:
            del self._idle_since[key]
            del self._sessions[key]
            visitor_key = key[:2]
            self._profile_sessions[visitor_key] -= 1
            if self._profile_sessions[visitor_key] <= 0:
                del self._profile_sessions[visitor_key]
                del self._profiles[visitor_key]
        return len(expired)
