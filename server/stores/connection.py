"""Which Redis a URL names, and a client for it: one server, a Sentinel-watched master, or
a Redis Cluster. The store and the live relay both connect through here.

    redis://[[user]:password@]host:6379/0                 one server (rediss:// for TLS)
    redis+sentinel://[[user]:password@]host:26379,host:26380/mymaster[/0]
                                                          the master that Sentinels name
    redis+cluster://[[user]:password@]host:7000,host:7001 a cluster, from any of its nodes
                                                          (rediss+cluster:// for TLS)

Every form takes `?prefix=NAME` (default "popin"), which keeps several installs apart in
one Redis. The user and password are the data nodes'; Sentinels are asked without them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import parse_qs, unquote

import redis.asyncio as redis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT

from .urls import without_password

Client: TypeAlias = "redis.Redis | redis.RedisCluster"

MAX_CONNECTIONS = 32
UNBOUNDED = 2**31
POOL_TIMEOUT_SECONDS = 10.0
SCHEMES = ("redis", "rediss", "redis+sentinel", "redis+cluster", "rediss+cluster")
DEFAULT_PORTS = {"redis+sentinel": 26379}
# A pooled connection that Redis closed (a restart, a failover) fails the next command
# sent on it: without a retry, every connection the pool held fails one request after
# Redis is back (35 of 40 API calls answered 503 twenty seconds after a restart). Once:
# a retry opens a new connection, and each retry may wait POOL_TIMEOUT_SECONDS for a free
# one (three retries kept a stopping process past 30 s, one time in seven).
RETRY_ATTEMPTS = 1
HEALTH_CHECK_SECONDS = 10


def _resilience() -> dict[str, Any]:
    """Connection options shared by the three kinds of client: retry a command once its
    connection is found dead, with backoff; PING a connection idle past the interval
    before using it."""
    return {"retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), RETRY_ATTEMPTS),
            "retry_on_error": [RedisConnectionError, RedisTimeoutError],
            "health_check_interval": HEALTH_CHECK_SECONDS}


def text(value: bytes | str) -> str:
    """A reply as text: the clients answer bytes."""
    return value.decode() if isinstance(value, bytes) else value


def is_redis(url: str) -> bool:
    return url.split("://", 1)[0] in SCHEMES


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    hosts: tuple[tuple[str, int], ...]
    # The Sentinel master's name; empty for the other forms.
    master: str
    db: int
    username: str | None
    password: str | None
    prefix: str

    @property
    def cluster(self) -> bool:
        return self.scheme.endswith("+cluster")


class Cluster(redis.RedisCluster):
    """redis-py's cluster client, warmed by one command before any other: commands that
    race on a fresh client break each other's connections (redis-py 8.1; twenty GETs at
    once on a new client fail about one run in two, none after a first PING)."""

    _warming: asyncio.Lock | None = None
    _warm = False

    async def execute_command(self, *args: EncodableT, **kwargs: Any) -> Any:
        if not self._warm:
            if self._warming is None:
                self._warming = asyncio.Lock()
            async with self._warming:
                if not self._warm:
                    await super().execute_command("PING")
                    self._warm = True
        return await super().execute_command(*args, **kwargs)


class SentinelMaster(redis.Redis):
    """The master's client, which also closes its connections to the Sentinels."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        manager: Any = getattr(self.connection_pool, "sentinel_manager", None)
        for sentinel in manager.sentinels if manager is not None else []:
            await sentinel.aclose()


def _hosts(netloc: str, default_port: int) -> tuple[tuple[str, int], ...]:
    hosts = []
    for part in netloc.split(","):
        host, sep, port = part.rpartition(":")
        if not sep or "]" in port:
            host, port = part, str(default_port)
        if not host or not port.isdigit():
            raise ValueError(f"bad host {part!r}: expected host:port")
        hosts.append((host.strip("[]"), int(port)))
    return tuple(hosts)


def parse(url: str) -> Target:
    """The parts of a store URL, or ValueError naming what is wrong."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ValueError(f"not a Redis URL: {without_password(url)!r}; expected one of "
                         f"{', '.join(s + '://' for s in SCHEMES)}")
    # urlsplit reads one host only; the credentials and the host list are split here.
    location, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    if "?" in location:
        location, _, query = location.partition("?")
    credentials, _, netloc = location.rpartition("@")
    username, _, password = credentials.partition(":")
    options = parse_qs(query)
    prefix = options.pop("prefix", ["popin"])[0]
    if options:
        raise ValueError(f"unknown option {sorted(options)[0]!r} in the store URL")
    if not prefix or "{" in prefix or "}" in prefix:
        # A brace in the prefix would become the cluster hash tag of every key.
        raise ValueError(f"bad prefix {prefix!r}: no braces, not empty")
    segments = [segment for segment in path.split("/") if segment]
    master = ""
    if scheme == "redis+sentinel":
        if not segments:
            raise ValueError("a Sentinel URL names its master: redis+sentinel://host:26379/"
                             "mymaster")
        master = unquote(segments.pop(0))
    if scheme.endswith("+cluster") and segments not in ([], ["0"]):
        raise ValueError("a Redis Cluster has database 0 only")
    if len(segments) > 1 or (segments and not segments[0].isdigit()):
        raise ValueError(f"bad database {'/'.join(segments)!r}: expected a number")
    hosts = _hosts(netloc or "localhost", DEFAULT_PORTS.get(scheme, 6379))
    if len(hosts) > 1 and scheme in ("redis", "rediss"):
        raise ValueError("several hosts: use redis+sentinel:// or redis+cluster://")
    return Target(scheme, hosts, master, int(segments[0]) if segments else 0,
                  unquote(username) or None, unquote(password) or None, prefix)


def connect(url: str) -> tuple[Client, str]:
    """A client for the URL (not yet connected) and the key prefix it names."""
    target = parse(url)
    if target.cluster:
        nodes = [ClusterNode(host, port) for host, port in target.hosts]
        # No bound on connections per node: the cluster client fails rather than waits
        # when one is reached, and a burst of saves must wait, not fail.
        return Cluster(startup_nodes=nodes, ssl=target.scheme == "rediss+cluster",
                                  username=target.username,
                                  password=target.password, **_resilience()), target.prefix
    if target.scheme == "redis+sentinel":
        # A failover moves the master: each new connection asks the Sentinels where it is.
        # Unbounded like the cluster's: its pool fails past its bound instead of waiting.
        sentinels: Any = Sentinel
        master: redis.Redis = sentinels(list(target.hosts), sentinel_kwargs={
            "max_connections": UNBOUNDED}).master_for(
            target.master, redis_class=SentinelMaster, db=target.db, username=target.username,
            password=target.password, max_connections=UNBOUNDED, **_resilience())
        return master, target.prefix
    # Many sessions save at once: wait for a free connection instead of failing.
    pool = redis.BlockingConnectionPool.from_url(url.split("?", 1)[0],
                                                 max_connections=MAX_CONNECTIONS,
                                                 timeout=POOL_TIMEOUT_SECONDS,
                                                 **_resilience())
    return redis.Redis.from_pool(pool), target.prefix
