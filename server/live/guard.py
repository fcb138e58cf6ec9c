"""The campaign guard: a marketing pop-in that lowers conversions against its control
group, with the always-valid test's confidence, is paused on its own. The owner learns it
from a banner on the dashboard, an entry in the campaign's activity and a signed webhook
(the site's notify_url); it stays paused until they press Resume or change the rule.

No tool in this field stops a campaign for hurting sales: they report and wait for a
person to look. The test used is the one owners read (features.lift), so the guard never
acts on a difference the dashboard calls "not enough data yet". It judges, by default,
conversions the site's backend confirmed through the API only: a page's events can be
scripted by anyone, and a stranger must not be able to stop a campaign (the groups are
assigned by a keyed hash and counted once per visitor per window, so they cannot be
chosen or stuffed either).
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import Any

from ..core.rules.campaign import BUDGET_EXEMPT, Rule
from ..core.site import Site
from ..features.lift import funnels, harmful, period
from ..stores.deliveries import Delivery
from ..stores.pauses import PAUSED, RESUMED, Pause, load_pauses, paused_rules, save_pauses
from .hub import Hub

log = logging.getLogger("popin.guard")

# How often the counters are judged: they change slowly, a look costs one store read.
GUARD_SECONDS = 600.0


def guarded(rule: Rule) -> bool:
    """Marketing pop-ins: what a visitor did not ask for. Answers never pause."""
    return rule.visual is not None and rule.category not in BUDGET_EXEMPT


async def guard_site(hub: Hub, site: Site) -> list[str]:
    """Judge every marketing rule of the site; returns the rules paused by this call."""
    now = hub.clock()
    rules = {rule.id: rule for rule in hub.rules_of(site.key).rules}
    if site.guard == "off":
        return []
    pauses = await load_pauses(hub.store, site.key)
    days = period(site.zone, now)
    rows = await hub.store.stats_read(site.key, days[0], days[-1])
    changed, newly = False, []
    for rule in rules.values():
        if not guarded(rule):
            continue
        pause = pauses.get(rule.id)
        if pause is not None and pause.fingerprint != rule.fingerprint:
            # The owner changed the rule: a new version, judged on its own days.
            pauses[rule.id] = pause = Pause(rule.id, RESUMED, now, rule.fingerprint,
                                            since=_tomorrow(days))
            changed = True
            _activity(hub, site, rule.id, "resumed (rule changed)", now)
        if pause is not None and pause.state == PAUSED:
            continue
        first = max(days[0], pause.since if pause else "")
        funnel = funnels(row for row in rows if row[0] >= first).get(rule.id)
        if funnel is None:
            continue
        # Only what no visitor can script, unless the owner chose otherwise.
        result = funnel.confirmed_lift if site.guard == "confirmed" else funnel.lift
        if not harmful(result):
            continue
        pauses[rule.id] = Pause(rule.id, PAUSED, now, rule.fingerprint,
                                difference=result.difference, low=result.low,
                                high=result.high, exposed=result.exposed,
                                control=result.control)
        changed = True
        newly.append(rule.id)
        _activity(hub, site, rule.id, "paused", now)
        await _tell_owner(hub, site, rule, pauses[rule.id])
        log.warning("site %s: campaign %s paused: it lowers conversions (%+.1f points)",
                    site.key, rule.id, result.difference * 100)
    if changed:
        await save_pauses(hub.store, site.key, pauses)
    _apply(hub, site, pauses, rules)
    return newly


async def resume(hub: Hub, site: Site, rule_id: str) -> bool:
    """The owner's Resume: the rule runs again, judged from tomorrow on."""
    pauses = await load_pauses(hub.store, site.key)
    pause = pauses.get(rule_id)
    if pause is None or pause.state != PAUSED:
        return False
    now = hub.clock()
    pauses[rule_id] = Pause(rule_id, RESUMED, now, pause.fingerprint,
                            since=_tomorrow(period(site.zone, now)))
    await save_pauses(hub.store, site.key, pauses)
    _activity(hub, site, rule_id, "resumed", now)
    _apply(hub, site, pauses, {rule.id: rule for rule in hub.rules_of(site.key).rules})
    return True


async def guard_all(hub: Hub) -> None:
    for site in hub.sites.values():
        try:
            await guard_site(hub, site)
        except Exception:  # a store hiccup: judged again at the next round
            log.exception("site %s: the campaign guard could not run", site.key)


def _apply(hub: Hub, site: Site, pauses: dict[str, Pause], rules: dict[str, Rule]) -> None:
    # In place: every session of the site holds this very set.
    current = hub.paused_for(site.key)
    wanted = paused_rules(pauses, {rule_id: rule.fingerprint for rule_id, rule in rules.items()})
    current.intersection_update(wanted)
    current.update(wanted)


def _tomorrow(days: list[str]) -> str:
    return (date.fromisoformat(days[-1]) + timedelta(days=1)).isoformat()


def _activity(hub: Hub, site: Site, rule_id: str, what: str, now: float) -> None:
    hub.pending.log(site.key, [{"at": now, "rule": rule_id, "metric": what, "amount": 1,
                                "visitor": ""}])


async def _tell_owner(hub: Hub, site: Site, rule: Rule, pause: Pause) -> None:
    if not site.notify_url:
        return
    payload: dict[str, Any] = {
        "type": "campaign.paused", "site": site.key, "rule": rule.id,
        "campaign": rule.campaign, "at": pause.at,
        "reason": "its pop-in lowers conversions against its control group",
        "conversions": "confirmed by the site's backend" if site.guard == "confirmed"
        else "all",
        "lift": {"difference": pause.difference, "low": pause.low, "high": pause.high,
                 "exposed": pause.exposed, "control": pause.control},
    }
    # Through the deliveries queue: signed with the site's webhook_secret, retried.
    await hub.store.save_delivery(Delivery.new(site.key, "", site.notify_url, payload,
                                               pause.at))
