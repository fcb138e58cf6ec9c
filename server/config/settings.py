"""What popin.toml can say, with its defaults: the store, the rules, the sites, the
webhooks, the limits. Read and checked by `popin.config.loader`."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..core.rules.actions import webhook_refusal
from ..core.site import Site

# Where this checkout keeps what the server serves and the shipped playbook.
PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
STATIC_DIR = PROJECT_ROOT / "static"
DEFAULT_RULES = PROJECT_ROOT / "rules"


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    timeout: float = 5.0
    max_attempts: int = 8
    # Seconds before the 2nd attempt; doubled each time, capped at an hour, with jitter.
    backoff: float = 2.0
    poll_interval: float = 0.5
    batch: int = 20
    # Webhooks go over https; plain http only to these hosts.
    allow_http_hosts: tuple[str, ...] = ()
    # Loopback, private and link-local addresses (or networks) a webhook may reach; none
    # by default, so a rule or a notify_url cannot make popin call into its own network.
    allow_private: tuple[str, ...] = ()

    def scheme_refusal(self, url: str) -> str | None:
        """Why `url` may not be called, whatever its host resolves to; None if it may."""
        return webhook_refusal(url, self.allow_http_hosts)


@dataclass(frozen=True, slots=True)
class Limits:
    """The `[limits]` table of popin.toml: what one stranger may take (see web/limits.py)."""

    # A widget says hello at once; a socket that does not is closed (4008).
    hello_seconds: float = 5.0
    # A socket with no message for this long is closed (4001); the widget reconnects on
    # the visitor's next action.
    idle_seconds: float = 1800.0
    connections: int = 10_000
    # Offices and mobile carriers put many visitors behind one address.
    connections_per_address: int = 200
    # New sockets per address: a page load or two a second from a whole office behind
    # one NAT passes; a script minting visitors by the thousand does not.
    handshakes_per_minute: float = 600.0
    handshake_burst: int = 200
    # A widget sends a few messages a second at most; bursts on page load.
    messages_per_second: float = 20.0
    message_burst: int = 60
    # Messages dropped for speed before the socket is closed (4029).
    dropped_before_close: int = 200
    # Sessions kept in memory (live, or resumable for 30 minutes): past it the ones idle
    # longest end first. About 12 KB each.
    sessions: int = 50_000
    # Slow clients: seconds to send a request's headers, and its body.
    header_seconds: float = 10.0
    body_seconds: float = 30.0


class ConfigError(Exception):
    pass


@dataclass(slots=True)
class Settings:
    store: str = "sqlite:///popin.db"
    rules: Path = DEFAULT_RULES
    # Each site's campaign folder (site key -> folder); a site not named uses `rules`.
    # popin.toml makes every site of several name its own (see config.loader).
    campaigns: dict[str, Path] = field(default_factory=dict)
    static: Path = STATIC_DIR
    sites: dict[str, Site] = field(default_factory=lambda: {"demo": Site("demo", "Demo shop")})
    geoip: Path | None = None
    # Watch the rules folder and reload on change (and on SIGHUP).
    reload: bool = True
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    # Signs cancel/reschedule links; when empty, kept in `secret_file` (made on first start).
    secret: str = ""
    secret_file: Path = Path("popin.secret")
    # Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (addresses or
    # networks). None by default: a client's own headers never change its address.
    trusted_proxies: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    # Who sees /metrics and the details of /healthz: a bearer token, or these addresses.
    metrics_token: str = ""
    metrics_allow: tuple[str, ...] = ("127.0.0.1", "::1")

    def folders(self) -> dict[str, Path]:
        """Site key -> the folder of its campaigns."""
        return {key: self.campaigns.get(key, self.rules) for key in self.sites}


def load_secret(settings: Settings) -> str:
    """The configured secret, else the one kept in secret_file (made once, owner-only)."""
    if settings.secret:
        return settings.secret
    path = settings.secret_file
    if not path.is_absolute() and settings.store.startswith("sqlite:///"):
        # Beside the embedded store: one folder holds the install's state.
        path = Path(settings.store.removeprefix("sqlite:///")).parent / path
    if not path.exists():
        _create_private(path, secrets.token_urlsafe(32))
    elif path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return path.read_text().strip()


def _create_private(path: Path, text: str) -> None:
    """Write `text` to a new owner-only file, never readable by others even for a moment,
    and never half-written: it appears whole, or a process that got there first wins."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
