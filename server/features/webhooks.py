"""Webhook delivery: signed, from the durable queue, retried with backoff, dead-lettered
with the reason after the last try. Runs in its own task: a slow or dead receiver never
slows event handling, which only queues.

Each request carries
    Popin-Delivery:  the delivery id (the same on every retry: receivers dedupe by it)
    Popin-Timestamp: seconds since the epoch, when this attempt was signed
    Popin-Signature: v1=HEX, HMAC-SHA256 with the site's webhook_secret over
                     f"{timestamp}.{body}"
Receivers recompute the signature, compare in constant time, and refuse timestamps
older than a few minutes (replays): see `verify`.

Rules and notify_url name the URL, so popin must not become a way into the network it
runs in: a URL needs https (http only to the hosts in [webhooks] allow_http_hosts), and
its host is resolved here, at send time, and refused when any of its addresses is
loopback, private, link-local or otherwise not public, unless listed in
[webhooks] allow_private. The request then goes to the address that was checked, so a
second DNS answer cannot differ from the first. A refusal is dead-lettered at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import socket
import time
from collections import Counter
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import Any

import httpx

from .. import __version__
from ..config import WebhookSettings
from ..core.rules.schema import plural
from ..core.site import Site
from ..stores.contract import Store
from ..stores.deliveries import Delivery

log = logging.getLogger("popin.webhooks")
TOLERANCE_SECONDS = 300


def signature(secret: str, timestamp: int, body: str) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256)
    return f"v1={mac.hexdigest()}"


def verify(secret: str, header: str, timestamp: str, body: str, now: float | None = None,
           tolerance: float = TOLERANCE_SECONDS) -> bool:
    """What a receiver does: the signature matches, and the request is recent."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, sent, body), header)


def next_delay(attempts: int, settings: WebhookSettings) -> float:
    delay = min(3600.0, settings.backoff * 2.0 ** max(0, attempts - 1))
    return delay / 2 + random.random() * delay / 2


class Refused(Exception):
    """A URL popin will not call: retrying cannot change that."""


Address = IPv4Address | IPv6Address


async def lookup(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in found]


def _kind(address: Address) -> str:
    for kind in ("loopback", "link_local", "private", "multicast", "unspecified", "reserved"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    return "non-public"


async def pinned(url: str, settings: WebhookSettings) -> tuple[httpx.URL, dict[str, str],
                                                               dict[str, Any]]:
    """The URL with the checked address in place of its host, the Host header and the TLS
    name to use; raises Refused, or OSError (TimeoutError too) when the name does not
    resolve, for now."""
    refused = settings.scheme_refusal(url)
    if refused:
        raise Refused(refused)
    try:
        target = httpx.URL(url)
    except httpx.InvalidURL as error:
        raise Refused(f"{url!r} is not a URL: {error}") from None
    port = target.port or (443 if target.scheme == "https" else 80)
    addresses: list[Address] = []
    # A resolver that never answers must not hold the delivery's lease.
    for text in await asyncio.wait_for(lookup(target.host, port), settings.timeout):
        # An IPv6 scope (fe80::1%eth0) and IPv4 written as IPv6 say nothing of the range.
        address = ip_address(text.split("%")[0])
        address = getattr(address, "ipv4_mapped", None) or address
        if (not address.is_global or address.is_multicast) and not any(
                address in ip_network(allowed, strict=False)
                for allowed in settings.allow_private):
            raise Refused(f"{target.host} resolves to {address}, a {_kind(address)} address: "
                          "refused unless [webhooks] allow_private lists it")
        addresses.append(address)
    if not addresses:
        raise OSError(f"{target.host} has no address")
    # Most receivers listen on IPv4; without happy eyeballs, it is the safer first try.
    first = min(addresses, key=lambda address: address.version)
    headers = {"Host": target.netloc.decode("ascii")}
    try:
        ip_address(target.host)
        extensions: dict[str, Any] = {}
    except ValueError:
        extensions = {"sni_hostname": target.host}
    return target.copy_with(host=str(first)), headers, extensions


async def attempt(client: httpx.AsyncClient, delivery: Delivery, secret: str,
                  settings: WebhookSettings) -> str | None:
    """Send once; None when the receiver took it (2xx), else why not. Raises Refused
    when the URL may never be called."""
    if not secret:
        return "the site has no webhook_secret: requests cannot be signed"
    try:
        url, host, extensions = await pinned(delivery.url, settings)
    except OSError as error:
        return f"cannot resolve the host of {delivery.url}: {error}"[:300]
    stamp = int(time.time())
    headers = {"Content-Type": "application/json", "User-Agent": f"popin-webhooks/{__version__}",
               "Popin-Delivery": delivery.id, "Popin-Timestamp": str(stamp),
               "Popin-Signature": signature(secret, stamp, delivery.body), **host,
               # Connections are pooled by address: one made for another host name (and
               # checked against its certificate) must not carry this request.
               "Connection": "close"}
    try:
        response = await client.post(url, content=delivery.body, headers=headers,
                                     extensions=extensions)
    except httpx.TimeoutException:
        return "timed out"
    except httpx.HTTPError as error:
        return f"{type(error).__name__}: {error}"[:300]
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}"


async def settle(store: Store, counts: Counter[str], delivery: Delivery, error: str | None,
                 settings: WebhookSettings, final: bool = False) -> None:
    delivery.attempts += 1
    delivery.last_error = error or ""
    if error is None:
        delivery.status = "delivered"
        counts["webhook.delivered"] += 1
    elif final or delivery.attempts >= settings.max_attempts:
        delivery.status = "dead"
        counts["webhook.dead"] += 1
        log.error("webhook %s to %s dead after %s: %s", delivery.id, delivery.url,
                  plural(delivery.attempts, "attempt"), error)
    else:
        delivery.due = time.time() + next_delay(delivery.attempts, settings)
        counts["webhook.retry"] += 1
    await store.save_delivery(delivery)


async def send_forever(store: Store, sites: Mapping[str, Site], counts: Counter[str],
                       settings: WebhookSettings) -> None:
    """Lease due deliveries, send them side by side, record each outcome; until cancelled.

    Outcomes are counted into `counts` (the server's metrics)."""
    # A lease outlasts an attempt, so a delivery in flight is never taken twice; after a
    # crash it comes due again and is retried (the receiver dedupes by delivery id).
    lease = settings.timeout * 2 + 5
    async with httpx.AsyncClient(timeout=settings.timeout, follow_redirects=False) as client:
        while True:
            due = await store.lease_deliveries(time.time(), settings.batch, lease)
            if not due:
                await asyncio.sleep(settings.poll_interval)
                continue

            await asyncio.gather(*(deliver(client, store, sites, counts, settings, delivery)
                                   for delivery in due))


async def deliver(client: httpx.AsyncClient, store: Store, sites: Mapping[str, Site],
                  counts: Counter[str], settings: WebhookSettings, delivery: Delivery) -> None:
    """One attempt and its outcome recorded."""
    site = sites.get(delivery.site)
    try:
        error = await attempt(client, delivery, site.webhook_secret if site else "", settings)
    except Refused as refused:
        counts["webhook.refused"] += 1
        await settle(store, counts, delivery, str(refused), settings, final=True)
        return
    await settle(store, counts, delivery, error, settings)


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
