"""What pop-in templates see: the visitor, the page, what triggered, cart and catalog."""

from __future__ import annotations

from typing import Any

from .rules.campaign import CatalogItem
from .rules.engine import RuleSet
from .visitor.facts import Facts
from .visitor.profile import Profile
from .wire.events import Custom, Dwell, Event, PageView, Scroll, TabReturn


def _item(sku: str, item: CatalogItem | None) -> dict[str, Any]:
    if item is None:
        return {"sku": sku, "name": sku, "url": "", "price": None}
    return {"sku": sku, "name": item.name, "url": item.url, "price": item.price}


def _trigger(event: Event, search: str) -> dict[str, Any]:
    if isinstance(event, Dwell):
        return {"keyword": event.keyword.split("@")[0], "seconds": event.seconds}
    if isinstance(event, Custom):
        return {"event": event.name, "props": event.props, "query": search}
    if isinstance(event, PageView):
        return {"url": event.url, "path": event.path, "query": search}
    if isinstance(event, Scroll):
        return {"percent": event.percent}
    if isinstance(event, TabReturn):
        return {"seconds": event.seconds}
    return {}


def template_context(event: Event, facts: Facts, page: PageView | None, search: str,
                     rules: RuleSet) -> dict[str, Any]:
    profile: Profile = facts.profile
    catalog = rules.catalog
    trigger = _trigger(event, search)
    sku = str(trigger.get("props", {}).get("sku", "")) if isinstance(event, Custom) else ""
    product = catalog.get(sku)
    # Cross-sell: what goes with the product at hand, else with what is in the cart.
    sources = [sku] if product else list(profile.cart)
    complements: list[dict[str, Any]] = []
    for source in sources:
        item = catalog.get(source)
        for other in item.complements if item else ():
            if other not in profile.cart and all(c["sku"] != other for c in complements):
                complements.append(_item(other, catalog.get(other)))
    cart_items = [{"sku": key, "name": line.name or _item(key, catalog.get(key))["name"],
                   "price": line.price, "quantity": line.quantity}
                  for key, line in profile.cart.items()]
    # Without the personalisation consent level, nothing remembered writes the text.
    personal = facts.may_personalise
    return {
        "visitor": {"visits": profile.visits,
                    "first_name": profile.first_name if personal else "",
                    "device": facts.agent.device,
                    "interests": dict(profile.interests) if personal else {},
                    "country": facts.place.country, "city": facts.place.city},
        "page": {"url": page.url if page else "", "path": page.path if page else "",
                 "title": page.title if page else ""},
        "trigger": trigger,
        "product": _item(sku, product) if sku else None,
        "cart": {"lines": cart_items,
                 "value": sum(line.price * line.quantity for line in profile.cart.values())},
        "complements": complements,
        "alternatives": [_item(other, catalog.get(other))
                         for other in (product.alternatives if product else ())],
        "catalog": {key: _item(key, item) for key, item in catalog.items()},
    }
