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
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import time
from collections import Counter
from collections.abc import Mapping

import httpx

from .. import __version__
from ..config import WebhookSettings
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


async def attempt(client: httpx.AsyncClient, delivery: Delivery, secret: str) -> str | None:
    """Send once; None when the receiver took it (2xx), else why not."""
    if not secret:
        return "the site has no webhook_secret: requests cannot be signed"
    stamp = int(time.time())
    headers = {"Content-Type": "application/json", "User-Agent": f"popin-webhooks/{__version__}",
               "Popin-Delivery": delivery.id, "Popin-Timestamp": str(stamp),
               "Popin-Signature": signature(secret, stamp, delivery.body)}
    try:
        response = await client.post(delivery.url, content=delivery.body, headers=headers)
    except httpx.TimeoutException:
        return "timed out"
    except httpx.HTTPError as error:
        return f"{type(error).__name__}: {error}"[:300]
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}"


async def settle(store: Store, counts: Counter[str], delivery: Delivery, error: str | None,
                 settings: WebhookSettings) -> None:
    delivery.attempts += 1
    delivery.last_error = error or ""
    if error is None:
        delivery.status = "delivered"
        counts["webhook.delivered"] += 1
    elif delivery.attempts >= settings.max_attempts:
        delivery.status = "dead"
        counts["webhook.dead"] += 1
        log.error("webhook %s to %s dead after %d attempts: %s", delivery.id, delivery.url,
                  delivery.attempts, error)
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

            async def one(delivery: Delivery) -> None:
                site = sites.get(delivery.site)
                error = await attempt(client, delivery, site.webhook_secret if site else "")
                await settle(store, counts, delivery, error, settings)

            await asyncio.gather(*(one(delivery) for delivery in due))


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
