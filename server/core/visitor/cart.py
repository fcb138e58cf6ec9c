"""The cart as the rules see it, kept on the profile from the page's cart events, so an
abandoned cart can be recalled at the next visit.

    add_to_cart {sku, name, price, quantity} · remove_from_cart {sku} · order_placed
"""

from __future__ import annotations

from ..wire.events import Custom
from .profile import CartLine, Profile

# A real cart holds fewer lines; a page that sends more cannot grow the profile further.
MAX_CART_LINES = 50
# Prices outside this range are not prices (a page could send -5 or 1e308).
MAX_PRICE = 1_000_000


def track_cart(profile: Profile, event: Custom) -> bool:
    """Apply a cart event to the profile; return whether the cart changed."""
    cart, props = profile.cart, event.props
    sku = str(props.get("sku", ""))[:64]
    if event.name == "add_to_cart" and sku and (sku in cart or len(cart) < MAX_CART_LINES):
        price = props.get("price")
        line = cart.get(sku) or CartLine(str(props.get("name", ""))[:200])
        if isinstance(price, int | float) and not isinstance(price, bool) and (
                0 <= price <= MAX_PRICE):
            line.price = float(price)
        quantity = props.get("quantity", 1)
        added = quantity if isinstance(quantity, int) and 0 < quantity < 1000 else 1
        line.quantity = line.quantity + added if sku in cart else added
        cart[sku] = line
        return True
    if event.name == "remove_from_cart" and sku in cart:
        del cart[sku]
        return True
    if event.name == "order_placed" and cart:
        cart.clear()
        return True
    return False
