"""Signed preview links: the owner's own page, with a fragment that asks popin to show
one rule's pop-in there. Signed with the server's secret and short-lived, so a link
passed around stops working, and nothing in it can name another site or rule."""

from __future__ import annotations

from urllib.parse import urlsplit

from itsdangerous import BadSignature, URLSafeTimedSerializer

# Long enough to open it on a phone too, short enough not to linger in a chat history.
PREVIEW_MAX_AGE = 24 * 3600
FRAGMENT = "popin-preview="


class PreviewLinks:
    def __init__(self, secret: str) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="popin-preview")

    def token(self, site: str, rule: str, variant: str = "") -> str:
        return self._serializer.dumps([site, rule, variant])

    def read(self, token: str) -> tuple[str, str, str] | None:
        try:
            site, rule, variant = self._serializer.loads(token, max_age=PREVIEW_MAX_AGE)
        except (BadSignature, ValueError, TypeError):
            return None
        return str(site), str(rule), str(variant)

    def link(self, page: str, site: str, rule: str, variant: str = "") -> str:
        """`page` with the fragment the widget looks for (any fragment it had is replaced)."""
        return f"{page.split('#')[0]}#{FRAGMENT}{self.token(site, rule, variant)}"


def page_allowed(page: str, origins: tuple[str, ...], server_origin: str) -> bool:
    """A preview opens only on the site's own pages: never a way to send people elsewhere."""
    try:
        parts = urlsplit(page)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    origin = f"{parts.scheme}://{parts.netloc}".lower()
    allowed = {server_origin.lower() if item == "self" else item.rstrip("/").lower()
               for item in origins}
    return origin in allowed
