"""The store URL names one Redis server, a master behind Sentinels, or a Redis Cluster;
every form is read as README documents it, and a wrong one is a clear error."""

from __future__ import annotations

import pytest

from popin.live.relay import redis_url
from popin.stores.connection import Target, parse


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://127.0.0.1:6379/0",
     Target("redis", (("127.0.0.1", 6379),), "", 0, None, None, "popin")),
    ("rediss://:s3cret@redis.internal:6380/2?prefix=shop",
     Target("rediss", (("redis.internal", 6380),), "", 2, None, "s3cret", "shop")),
    ("redis+sentinel://10.0.0.5:26379,10.0.0.6:26379,10.0.0.7/popin-master",
     Target("redis+sentinel", (("10.0.0.5", 26379), ("10.0.0.6", 26379), ("10.0.0.7", 26379)),
            "popin-master", 0, None, None, "popin")),
    ("redis+sentinel://app:pw@sentinel-a:26379/mymaster/3?prefix=eu",
     Target("redis+sentinel", (("sentinel-a", 26379),), "mymaster", 3, "app", "pw", "eu")),
    ("redis+cluster://10.0.0.11:7000,10.0.0.12:7000,10.0.0.13:7000",
     Target("redis+cluster", (("10.0.0.11", 7000), ("10.0.0.12", 7000), ("10.0.0.13", 7000)),
            "", 0, None, None, "popin")),
    ("rediss+cluster://:pw@node-1:7000/?prefix=shop",
     Target("rediss+cluster", (("node-1", 7000),), "", 0, None, "pw", "shop")),
    ("redis://[::1]:6379",
     Target("redis", (("::1", 6379),), "", 0, None, None, "popin")),
])
def test_each_form_of_store_url(url: str, expected: Target) -> None:
    assert parse(url) == expected
    assert redis_url(url), "the live relay and --workers take every Redis form"


@pytest.mark.parametrize(("url", "error"), [
    ("redis+sentinel://10.0.0.5:26379", "names its master"),
    ("redis+cluster://node-1:7000/1", "database 0 only"),
    ("redis://a:6379,b:6379/0", "redis\\+sentinel:// or redis\\+cluster://"),
    ("redis://localhost:6379/zero", "bad database"),
    ("redis+cluster://node-1:port", "bad host"),
    ("redis://localhost:6379/0?prefix={shop}", "no braces"),
    ("redis://localhost:6379/0?prefx=shop", "unknown option 'prefx'"),
    ("memcached://localhost", "not a Redis URL"),
])
def test_a_wrong_store_url_says_what_is_wrong(url: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse(url)


def test_the_embedded_store_is_not_redis() -> None:
    assert not redis_url("sqlite:///popin.db")
    assert not redis_url("popin.db")
