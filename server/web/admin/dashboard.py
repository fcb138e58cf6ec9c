"""What each dashboard page shows, gathered from the store and the hub; no HTTP here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from markupsafe import Markup

from ...core.rules.campaign import BUDGET_EXEMPT, Rule
from ...core.site import Site
from ...features.exports import FORMATS
from ...features.lift import Funnel, funnels, period
from ...live.hub import Hub
from ...stores.pauses import Pause, load_pauses, paused_rules
from . import charts

# "Pop-ins shown in the last minutes"
RECENT_SECONDS = 5 * 60
RECENT_ROWS = 30


@dataclass(frozen=True, slots=True)
class Row:
    """One rule on the overview."""

    rule: str
    campaign: str
    funnel: Funnel
    holdout: float
    chart: Markup
    lift_chart: Markup | None
    paused: Pause | None = None
    # Why there is no lift, when there is none.
    unmeasured: str = ""


async def live(hub: Hub, site: Site) -> dict[str, int]:
    now = hub.clock()
    recent = await hub.store.recent_list(site.key, 500)
    shown = sum(int(entry["amount"]) for entry in recent
                if entry["metric"] == "shown" and entry["at"] >= now - RECENT_SECONDS)
    return {"visitors": hub.live_visitors(site.key), "shown": shown}


async def overview(hub: Hub, site: Site) -> dict[str, Any]:
    days = period(site.zone, hub.clock())
    found = funnels(await hub.store.stats_read(site.key, days[0], days[-1]))
    rules = {rule.id: rule for rule in hub.rules_of(site.key).rules}
    paused = await _paused(hub, site)
    rows = []
    # Campaigns with activity first, then the quiet ones, each by campaign name.
    for rule_id in sorted(set(found) | set(rules), key=lambda r: (
            not (r in found and found[r]["triggered"]), _campaign(rules, r), r)):
        funnel = found.get(rule_id) or Funnel(rule_id)
        rule = rules.get(rule_id)
        holdout = rule.holdout_share(site.holdout) if rule else 0.0
        chart = charts.bars(days, {"shown": funnel.series("shown", days),
                                   "converted": funnel.series("converted", days)},
                            f"{rule_id}: shown and converted per day")
        lift = funnel.lift
        lift_chart = (charts.interval(lift.difference, lift.low, lift.high,
                                      f"{rule_id}: lift and its 95% interval")
                      if holdout or funnel["held_out"] else None)
        rows.append(Row(rule_id, _campaign(rules, rule_id), funnel, holdout, chart, lift_chart,
                        paused.get(rule_id), _unmeasured(rule, site)))
    start = datetime.combine(date.fromisoformat(days[-1]), time(0), tzinfo=site.zone)
    bookings = await hub.store.list_bookings(site.key, start.timestamp(),
                                             (start + timedelta(days=7)).timestamp())
    leads = await hub.store.list_leads(site.key, (start - timedelta(days=7)).timestamp())
    return {"days": days, "rows": rows, "live": await live(hub, site),
            "active": [row for row in rows if row.funnel["triggered"]],
            "paused": [row for row in rows if row.paused],
            "bookings": sum(1 for b in bookings if b.status == "confirmed"),
            "leads": len(leads)}


def _unmeasured(rule: Rule | None, site: Site) -> str:
    if rule is None:
        return "not measured: no longer in the rules"
    if rule.visual is None:
        return "not measured: it shows nothing (it tags or calls a webhook)"
    if rule.holdout == 0:
        return "not measured: its holdout is 0"
    if rule.category not in BUDGET_EXEMPT:
        return f"not measured: the site's holdout is {site.holdout:g}"
    return "not measured: answers a visitor asked for are never held out"


async def _paused(hub: Hub, site: Site) -> dict[str, Pause]:
    """The site's campaigns the guard stopped, and why (while the rule is unchanged)."""
    pauses = await load_pauses(hub.store, site.key)
    rules = hub.rules_of(site.key).rules
    holding = paused_rules(pauses, {rule.id: rule.fingerprint for rule in rules})
    return {rule_id: pauses[rule_id] for rule_id in holding}


def _campaign(rules: dict[str, Rule], rule_id: str) -> str:
    rule = rules.get(rule_id)
    return rule.campaign if rule else "(no longer in the rules)"


async def campaign(hub: Hub, site: Site, rule_id: str) -> dict[str, Any] | None:
    rule = hub.rules_of(site.key).by_id.get(rule_id)
    days = period(site.zone, hub.clock())
    funnel = funnels(await hub.store.stats_read(site.key, days[0], days[-1])).get(rule_id)
    if rule is None and funnel is None:
        return None
    funnel = funnel or Funnel(rule_id)
    recent = [entry for entry in await hub.store.recent_list(site.key, 1000)
              if entry["rule"] == rule_id][:RECENT_ROWS]
    errors = [error for error in hub.rule_status.errors
              if rule is not None and error.startswith(f"{rule.file}:")]
    lift = funnel.lift
    variants = [(variant_id, funnel.variants[variant_id], funnel.variant_lift(variant_id))
                for variant_id in _variant_order(rule, funnel)]
    return {
        "rule": rule, "rule_id": rule_id, "funnel": funnel, "lift": lift,
        "holdout": rule.holdout_share(site.holdout) if rule else 0.0,
        "paused": (await _paused(hub, site)).get(rule_id),
        "variants": variants, "comparisons": funnel.comparisons() if variants else [],
        "source": _source(rule) if rule else "",
        "funnel_chart": charts.funnel([(name.replace("_", " "), float(funnel[name])) for name in (
            "triggered", "exposed", "shown", "clicked", "converted")], "the funnel"),
        "daily_chart": charts.bars(days, {"shown": funnel.series("shown", days),
                                          "converted": funnel.series("converted", days)},
                                   "shown and converted per day"),
        "lift_chart": charts.interval(lift.difference, lift.low, lift.high,
                                      "lift and its 95% interval"),
        "errors": errors, "recent": recent, "zone": site.zone, "days": days,
    }


def _variant_order(rule: Rule | None, funnel: Funnel) -> list[str]:
    """The rule's variants as written (also those not shown yet), then retired ones."""
    written = [variant.id for variant in rule.variants] if rule else []
    for variant_id in written:
        funnel.variants.setdefault(variant_id, Funnel(funnel.rule, variant=variant_id))
    return written + sorted(set(funnel.variants) - set(written))


def _source(rule: Rule) -> str:
    """The rule as written: its lines in its file, up to the next rule."""
    try:
        lines = Path(rule.file).read_text(encoding="utf-8").splitlines()
    except OSError:
        return ""
    start = rule.line - 1
    indent = len(lines[start]) - len(lines[start].lstrip(" -"))
    taken = [lines[start]]
    for text in lines[start + 1:]:
        stripped = text.lstrip(" ")
        if stripped and (len(text) - len(stripped) < indent or (stripped.startswith("- ")
                         and len(text) - len(stripped) <= indent - 2)):
            break
        taken.append(text)
    return "\n".join(taken).rstrip()


async def audiences(hub: Hub, site: Site) -> dict[str, Any]:
    days = period(site.zone, hub.clock())
    infos = {info.name: info for info in await hub.store.audience_list(site.key)}
    found = []
    for name in sorted(await hub.audience_names(site.key)):
        history = dict(await hub.store.audience_sizes(site.key, name))
        # Days without changes keep the size of the last day with some.
        earlier = [day for day in history if day < days[0]]
        size = history[max(earlier)] if earlier else 0
        sizes = []
        for day in days:
            size = history.get(day, size)
            sizes.append(float(size))
        info = infos.get(name)
        found.append({"name": name, "size": info.size if info else 0,
                      "days": hub.rules_of(site.key).audience_days.get(name),
                      "chart": charts.line(days, sizes, f"{name}: members per day")})
    return {"audiences": found, "formats": list(FORMATS)}


async def bookings(hub: Hub, site: Site) -> dict[str, Any]:
    today = datetime.fromtimestamp(hub.clock(), site.zone).date()
    start = datetime.combine(today, time(0), tzinfo=site.zone)
    found = await hub.store.list_bookings(site.key, start.timestamp(),
                                          (start + timedelta(days=14)).timestamp())
    by_day: dict[str, list[Any]] = {}
    for booking in found:
        day = datetime.fromtimestamp(booking.start, site.zone)
        by_day.setdefault(day.strftime("%A %d %B"), []).append(
            (day.strftime("%H:%M"), booking))
    leads = await hub.store.list_leads(site.key, (start - timedelta(days=30)).timestamp())
    return {"by_day": by_day, "leads": [
        (datetime.fromtimestamp(lead.created, site.zone).strftime("%d %b %H:%M"), lead)
        for lead in reversed(leads)]}
