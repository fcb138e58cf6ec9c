"""Who may see the dashboard: the owner, with the password set by
`popin admin set-password`.

The password is kept as an argon2id hash (slow on purpose). A login gives a signed,
expiring session cookie (HttpOnly, SameSite=Strict, Secure when served over TLS) bound
to the hash and to a session epoch kept in the store: a new password or a logout ends
every session, everywhere, at once. Every form carries a token that must match a cookie
of the same name (double submit), and failed logins are limited per client address,
which is used in memory only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import secrets
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from ...stores.contract import Store

PASSWORD_SETTING = "admin_password"
# Drawn anew at each logout: the cookies issued before name the old one.
EPOCH_SETTING = "admin_session_epoch"
SESSION_COOKIE = "popin_admin"
CSRF_COOKIE = "popin_csrf"
SESSION_SECONDS = 12 * 3600
MIN_PASSWORD = 10
# Failed logins allowed per client address within the window.
MAX_FAILURES = 5
FAILURE_WINDOW = 15 * 60.0
# And from all addresses together, over a short window: many addresses slow every login
# down for a minute at most, they never lock the owner out for long.
GLOBAL_MAX_FAILURES = 30
GLOBAL_WINDOW = 60.0
# Password checks running at once, and waiting: past that a login is told to retry.
HASH_WORKERS = 2
HASH_QUEUE = 16

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"the password needs at least {MIN_PASSWORD} characters")
    return _hasher.hash(password)


def password_matches(stored: str | None, password: str) -> bool:
    if not stored:
        # As slow as a real check: the answer time says nothing.
        _hasher.hash(password)
        return False
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def _yield_to_the_event_loop() -> None:
    """Hashing threads (and the lanes argon2 starts from them, which inherit it) run at
    the lowest CPU priority: on a small machine they would otherwise outnumber the event
    loop's thread and slow every widget down."""
    with contextlib.suppress(AttributeError, OSError):  # Linux: a nice value per thread
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


class PasswordChecks:
    """argon2 costs tens of milliseconds of CPU on purpose: on the event loop, a few dozen
    logins would stall every widget. It runs on a small thread pool instead (argon2-cffi
    releases the GIL), behind a bounded queue."""

    def __init__(self, workers: int = HASH_WORKERS, queue: int = HASH_QUEUE) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="popin-argon2",
                                        initializer=_yield_to_the_event_loop)
        self._slots = asyncio.Semaphore(workers + queue)

    async def matches(self, stored: str | None, password: str) -> bool | None:
        """Whether the password is right; None when too many checks are waiting already."""
        if self._slots.locked():
            return None
        async with self._slots:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, password_matches, stored, password)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class Sessions:
    """A signed cookie alone stays valid until it expires, whatever the server thinks of
    it: so it carries a fingerprint of the password hash and of the store's session epoch,
    and stops matching when either changes. The fingerprint is keyed, so the cookie tells
    nothing about the hash."""

    def __init__(self, secret: str) -> None:
        self._signer = URLSafeTimedSerializer(secret, salt="popin-admin-session")
        self._key = hashlib.sha256(f"popin-admin-fingerprint:{secret}".encode()).digest()

    def _fingerprint(self, password_hash: str, epoch: str) -> str:
        return hmac.new(self._key, f"{epoch}\0{password_hash}".encode(),
                        hashlib.sha256).hexdigest()

    def issue(self, password_hash: str, epoch: str) -> str:
        return self._signer.dumps({"f": self._fingerprint(password_hash, epoch)})

    def valid(self, token: str | None, password_hash: str | None, epoch: str) -> bool:
        if not token or not password_hash:
            return False
        try:
            data = self._signer.loads(token, max_age=SESSION_SECONDS)
        except BadSignature:
            return False
        return isinstance(data, dict) and hmac.compare_digest(
            str(data.get("f")), self._fingerprint(password_hash, epoch))


async def credentials(store: Store) -> tuple[str | None, str]:
    """The password hash (None before set-password) and the current session epoch."""
    return (await store.setting_get(PASSWORD_SETTING),
            await store.setting_get(EPOCH_SETTING) or "")


async def end_every_session(store: Store) -> None:
    await store.setting_put(EPOCH_SETTING, secrets.token_urlsafe(16))


def secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_cookie(response: Response, request: Request, name: str, value: str,
               max_age: int | None = None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/admin", httponly=True,
                        secure=secure(request), samesite="strict")


def csrf_token(request: Request) -> str:
    """The token this browser's forms carry. Signed in: derived from the session cookie,
    which pages of other origins can neither read (HttpOnly) nor replace with one that
    works, so a cookie planted from a sibling subdomain ("cookie tossing") forges no
    form. Before login: a random cookie's (double submit), all a login form needs."""
    session = request.cookies.get(SESSION_COOKIE)
    if session:
        return hmac.new(session.encode(), b"popin-csrf", "sha256").hexdigest()
    return request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)


def csrf_ok(request: Request, submitted: object) -> bool:
    expected = (csrf_token(request) if request.cookies.get(SESSION_COOKIE)
                else request.cookies.get(CSRF_COOKIE, ""))
    return (bool(expected) and isinstance(submitted, str)
            and hmac.compare_digest(expected, submitted))


class LoginGuard:
    """Failed logins per client address, forgotten after the window, and from all addresses
    together over a shorter one. The address is the connection's own unless the owner
    listed a trusted proxy (`trusted_proxies`)."""

    def __init__(self, clock: object = time.monotonic) -> None:
        self._failures: dict[str, deque[float]] = {}
        self._everyone: deque[float] = deque()
        self._clock = clock

    def _recent(self, address: str) -> deque[float]:
        now = self._now()
        failures = self._failures.get(address, deque())
        while failures and failures[0] < now - FAILURE_WINDOW:
            failures.popleft()
        if not failures:
            self._failures.pop(address, None)
        return failures

    def _now(self) -> float:
        clock = self._clock
        assert callable(clock)
        now: float = clock()
        return now

    def retry_after(self, address: str) -> int:
        """Seconds to wait before another try; 0 when one is allowed."""
        now = self._now()
        while self._everyone and self._everyone[0] < now - GLOBAL_WINDOW:
            self._everyone.popleft()
        if len(self._everyone) >= GLOBAL_MAX_FAILURES:
            return max(1, int(self._everyone[0] + GLOBAL_WINDOW - now))
        failures = self._recent(address)
        if len(failures) < MAX_FAILURES:
            return 0
        return max(1, int(failures[0] + FAILURE_WINDOW - now))

    def failed(self, address: str) -> None:
        now = self._now()
        self._failures.setdefault(address, deque()).append(now)
        self._everyone.append(now)
        # Bounded: an attacker rotating addresses cannot grow this without end.
        if len(self._failures) > 10_000:
            self._failures.pop(next(iter(self._failures)))

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)
