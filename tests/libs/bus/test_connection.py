"""SCIM_REDIS_URL: one Redis or a Sentinel service, and the client follows a failover."""

from __future__ import annotations

import time

import pytest

from libs.bus.connection import RedisUrlError, connect, parse_sentinel_url, validate_url
from libs.config import SettingsError, load_settings
from tests.support.sentinel import SERVICE, sentinel_cluster


def test_a_sentinel_url_names_its_sentinels_service_database_and_passwords():
    target = parse_sentinel_url("redis+sentinel://:p%40ss@s1:26379,s2:26380,s3/mymaster/2"
                                "?sentinel_password=sp&sentinel_username=watch")
    assert target.sentinels == [("s1", 26379), ("s2", 26380), ("s3", 26379)]
    assert (target.service, target.db, target.password, target.username) == ("mymaster", 2, "p@ss", None)
    assert target.options == {"sentinel_password": "sp", "sentinel_username": "watch"}
    assert not target.ssl and parse_sentinel_url("rediss+sentinel://h:1/m").ssl


@pytest.mark.parametrize("url", ["redis+sentinel://:hunter2@s1:26379/", "redis+sentinel://:hunter2@s1:x/m",
                                 "redis+sentinel://:hunter2@s1:26379/m/zero",
                                 "redis+sentinel://:hunter2@s1:26379/m?sentinel_pasword=hunter2",
                                 "sentinel://:hunter2@s1:26379/m"])
def test_a_malformed_sentinel_url_is_refused_in_one_line_without_its_password(url):
    with pytest.raises(SettingsError) as refused:
        load_settings({"SCIM_REDIS_URL": url})
    message = str(refused.value)
    assert "SCIM_REDIS_URL" in message and "hunter2" not in message and "\n" not in message


def test_plain_urls_stay_valid():
    for url in ("redis://:pw@bus:6379/0", "rediss://user:pw@bus:6380/1", "unix:///run/redis.sock"):
        validate_url(url)
    with pytest.raises(RedisUrlError):
        validate_url("http://bus:6379")


@pytest.fixture(scope="module")
def cluster():
    with sentinel_cluster() as c:
        yield c


def _write_until_it_succeeds(client, key: str, within: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within:
        try:
            client.set(key, "x")
            return time.monotonic() - started
        except Exception:
            time.sleep(0.05)
    raise AssertionError(f"no write succeeded within {within}s")


@pytest.mark.servers
def test_a_client_reaches_the_primary_through_the_sentinels_and_follows_a_demotion(cluster):
    """A planned failover (SENTINEL FAILOVER) demotes the primary the client is connected to:
    the sentinels drop its clients, and a connection that still reaches it gets READONLY,
    which redis-py's sentinel connection turns into a reconnect; either way the next write
    lands on the new primary."""
    client = connect(cluster.url, socket_timeout=2, socket_connect_timeout=2)
    client.set("before", "1")
    first = cluster.primary_port()
    assert client.connection_pool.get_master_address()[1] == first
    cluster.sentinel(cluster.sentinel_ports[0]).execute_command("SENTINEL", "FAILOVER", SERVICE)
    deadline = time.monotonic() + 30
    while cluster.primary_port() in (first, None) and time.monotonic() < deadline:
        time.sleep(0.1)
    second = cluster.primary_port()
    assert second not in (first, None), "the sentinels never promoted the replica"
    # Until the sentinels reconfigure it, the old primary still takes writes (which its resync
    # then drops: the front's resend covers that); the READONLY case starts once it follows.
    while cluster.client(first).info("replication")["role"] != "slave" and time.monotonic() < deadline:
        time.sleep(0.1)
    _write_until_it_succeeds(client, "after", within=20)
    assert cluster.client(second).get("after") == b"x"
    assert cluster.client(second).get("before") == b"1"
