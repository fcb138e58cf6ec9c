"""Security headers on every HTTP answer, chosen by where it is served from, so that no
page depends on its handler remembering them.

    /admin     the owner's dashboard: only its own files, never framed, never cached
    /bookings  a visitor's appointment page (its URL is a signed token): no script at
               all, never framed, never cached, the URL never sent as a referrer
    /demo      the demo shop, a stand-in for an owner's site: the page's inline snippets
               and popin.js, the widget's socket and styles, nothing from elsewhere
    elsewhere  the widget script, its socket, the API: nosniff and a referrer policy;
               an HTML answer gets a policy that allows nothing

No Cross-Origin-Resource-Policy anywhere: other sites load /popin.js.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass(frozen=True, slots=True)
class Policy:
    csp: str
    referrer: str = "strict-origin-when-cross-origin"
    # Private answers are never stored by a browser or a proxy, nor shown in a frame.
    private: bool = False
    # Whether the CSP goes on every answer or only on HTML (a script needs none).
    html_only: bool = False


ADMIN = Policy("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
               "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
               referrer="no-referrer", private=True)
# The appointment page's styles are inline in its template; it runs no script.
BOOKINGS = Policy("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
                  "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
                  referrer="no-referrer", private=True)
# The demo pages call popin() from inline snippets and handlers, as owners' pages do, and
# the widget styles its card with an inline <style> in its shadow root.
DEMO = Policy("default-src 'self'; script-src 'self' 'unsafe-inline'; "
              "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
              "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'self'")
OTHER = Policy("default-src 'none'; base-uri 'none'; form-action 'none'; "
               "frame-ancestors 'none'", html_only=True)
PREFIXES = (("/admin", ADMIN), ("/bookings", BOOKINGS), ("/demo", DEMO))


def policy_for(path: str) -> Policy:
    for prefix, policy in PREFIXES:
        if path == prefix or path.startswith(prefix + "/"):
            return policy
    return OTHER


def apply(policy: Policy, headers: MutableHeaders) -> None:
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = policy.referrer
    if not policy.html_only or headers.get("content-type", "").startswith("text/html"):
        headers["Content-Security-Policy"] = policy.csp
    if policy.private:
        headers["Cache-Control"] = "no-store"
        # For browsers that predate frame-ancestors.
        headers["X-Frame-Options"] = "DENY"


class SecurityHeaders:
    """Plain ASGI (no BaseHTTPMiddleware): streamed exports pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = policy_for(scope["path"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                apply(policy, MutableHeaders(scope=message))
            await send(message)

        await self.app(scope, receive, send_with_headers)
