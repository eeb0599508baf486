"""Client-side connection caching decisions (postclient/smtp/reuse.py), without sockets.

Labels, properties, the cache policy and what happens after a session
(save, QUIT, destination binding) with a fake scache client and fake
sessions.  The end-to-end behaviour is in tests/integration/test_reuse.py.
"""

import os
import socket
import time

import pytest

from postclient.config.config import Config
from postclient.smtp import reuse
from postclient.smtp.destination import Site
from postclient.smtp.ehlo import Capabilities
from postclient.smtp.events import PAUSED
from postclient.smtp.request import DeliveryRequest, Recipient
from postclient.smtp.resolve import Resolution, ServerAddress

ADDRESS = ServerAddress("mx.example.com", "192.0.2.1", 25, 10, socket.AF_INET)
SITE = Site(text="example.com", protocol="smtp", host="example.com", port=25, service="smtp")


def config(tmp_path, text=""):
    (tmp_path / "main.cf").write_text(f"queue_directory = {tmp_path}\nmyhostname = me.example\n"
                                      + text)
    return Config.load(str(tmp_path), process_name="relay")


def request(use=False, store=False):
    return DeliveryRequest(queue_id="Q", nexthop="example.com", sender="",
                           recipients=[Recipient("a@example.com")],
                           use_cached_connection=use, store_connection=store)


class FakeScache:
    def __init__(self):
        self.disabled = False
        self.saved = []

    def save_endp(self, ttl, label, properties, fd):
        self.saved.append(("endp", ttl, label, properties))
        return True

    def save_dest(self, ttl, label, properties, endp_label):
        self.saved.append(("dest", ttl, label, properties, endp_label))
        return True


class FakeClient:
    """A protocol core as driver.quit_session() drives it: quit() is recorded, and the
    session then ends at once (the real quit_session runs: a compiled reuse.py calls
    it directly, so it cannot be replaced)."""

    def __init__(self, reusable=True, state="READY"):
        self.reusable = reusable
        self.state = state
        self.capabilities = Capabilities(esmtp=True, pipelining=True)
        self.next_envelope = None       # no next message's transaction under way
        self.quit_sent = False

    def quit(self):
        assert not self.quit_sent, "QUIT sent twice"
        self.quit_sent = True
        self.state = "CLOSED"

    def next_event(self):
        return PAUSED

    def data_to_send(self):
        return b""


class FakeConnection:
    def __init__(self):
        self.closed = False

    class sock:
        @staticmethod
        def fileno():
            return 99

    def close(self):
        self.closed = True


def started(tmp_path, monkeypatch, text="", use=True, store=True):
    """A RequestCache whose policy is decided, with a FakeScache; (cache, fake).

    shared_client is imported from postclient.scache.client, outside the compiled
    group: reuse.py looks it up at run time, so replacing it works compiled too."""
    fake = FakeScache()
    monkeypatch.setattr(reuse, "shared_client", lambda directory, timeout: fake)
    cache = reuse.RequestCache(config(tmp_path, text), request(use, store), "smtp")
    cache.begin_site(SITE, Resolution(SITE, [ADDRESS]))
    return cache, fake


def test_labels():
    identity = "|service=relay|helo=me.example"
    assert reuse.endpoint_label("smtp", ADDRESS, identity) == "smtp:[192.0.2.1]:25" + identity
    six = ServerAddress("mx", "2001:db8::1", 25, 0, socket.AF_INET6)
    assert reuse.endpoint_label("smtp", six, "") == "smtp:[2001:db8::1]:25"
    unix = ServerAddress("localhost", "/run/lmtp", None, 0, socket.AF_UNIX)
    assert reuse.endpoint_label("lmtp", unix, "") == "lmtp:unix:/run/lmtp"
    assert reuse.destination_label("smtp", SITE, "") == "smtp:example.com:25"
    bracketed = Site(text="[mx.example.com]:587", protocol="smtp", host="mx.example.com",
                     port=587, bracketed=True)
    assert reuse.destination_label("smtp", bracketed, "") == "smtp:[mx.example.com]:587"
    lmtp = Site(text="unix:/run/lmtp", protocol="lmtp", unix_path="/run/lmtp")
    assert reuse.destination_label("lmtp", lmtp, "") == "lmtp:unix:/run/lmtp"


def test_identity_separates_services_helo_names_and_source_addresses(tmp_path, monkeypatch):
    cache, _ = started(tmp_path, monkeypatch, "smtp_helo_name = other.example\n"
                                                 "smtp_bind_address = 127.0.0.2\n")
    assert cache._identity() == "|service=relay|helo=other.example|bind=127.0.0.2"
    assert cache.dest_label == "smtp:example.com:25|service=relay|helo=other.example|bind=127.0.0.2"


def test_properties_round_trip_and_reject_nonsense():
    opened = time.time()
    text = reuse.encode_endpoint(ADDRESS, Capabilities(esmtp=True, size=True, size_limit=1000),
                                 opened)
    address, capabilities, when = reuse.decode_endpoint(text)
    assert (address.name, address.address, address.port, address.family) == \
        ("mx.example.com", "192.0.2.1", 25, socket.AF_INET)
    assert Capabilities.from_dict(capabilities).size_limit == 1000 and when == opened
    for bad in ("", "[]", "{}", '{"version": 2}', text.replace('"port":25', '"port":0'),
                text.replace('"family":2', '"family":99'),
                text.replace('"port":25', '"port":null'),
                text.replace('"opened":', '"opened":"x","was":')):
        assert reuse.decode_endpoint(bad) is None, bad


@pytest.mark.parametrize("patterns, name, expected", [
    ([], "example.com", False),
    (["example.com"], "EXAMPLE.com", True),
    (["other.example", "Example.COM"], "example.com", True),
    (["!example.com", "example.com"], "example.com", False),
    (["inline:{ example.com=yes }"], "example.com", True),
    (["inline:{ example.com=yes }"], "example.net", False),
    (["/run/lmtp"], "/run/lmtp", True),
])
def test_destination_patterns(patterns, name, expected):
    assert reuse._matches(patterns, name) is expected


@pytest.mark.parametrize("text, use, store, expected", [
    ("", False, False, (False, False)),
    ("", True, True, (True, True)),
    ("", True, False, (True, False)),
    ("smtp_connection_cache_on_demand = no\n", True, True, (False, False)),
    ("smtp_connection_cache_destinations = example.com\n", False, False, (True, True)),
    ("smtp_connection_cache_on_demand = no\n"
     "smtp_connection_cache_destinations = example.com\n", False, False, (True, True)),
])
def test_policy(tmp_path, monkeypatch, text, use, store, expected):
    cache, _ = started(tmp_path, monkeypatch, text, use, store)
    assert (cache.load, cache.store) == expected
    assert cache.keep_open() is expected[1]


def test_policy_is_decided_at_the_first_next_hop_only(tmp_path, monkeypatch):
    monkeypatch.setattr(reuse, "shared_client", lambda directory, timeout: FakeScache())
    cache = reuse.RequestCache(config(tmp_path), request(True, True), "smtp")
    fallback = Site(text="relay.example", protocol="smtp", host="relay.example", port=25,
                    index=1, is_fallback=True)
    cache.begin_site(SITE, Resolution(SITE, []))           # no addresses: nothing decided
    cache.begin_site(fallback, Resolution(fallback, [ADDRESS]))
    assert not cache.active


def test_a_disabled_cache_is_not_used(tmp_path, monkeypatch):
    fake = FakeScache()
    fake.disabled = True
    monkeypatch.setattr(reuse, "shared_client", lambda directory, timeout: fake)
    cache = reuse.RequestCache(config(tmp_path), request(True, True), "smtp")
    cache.begin_site(SITE, Resolution(SITE, [ADDRESS]))
    assert not cache.active and not cache.keep_open()


def test_a_good_session_is_saved_under_endpoint_and_destination_once(tmp_path, monkeypatch):
    cache, fake = started(tmp_path, monkeypatch, "smtp_connection_cache_time_limit = 3s\n")
    client, connection = FakeClient(), FakeConnection()
    cache.session_done(connection, client, ADDRESS, time.time(), True, SITE)
    endp_label = "smtp:[192.0.2.1]:25|service=relay|helo=me.example"
    assert [entry[:3] for entry in fake.saved] == [("endp", 3, endp_label),
                                                   ("dest", 3, cache.dest_label)]
    assert fake.saved[1][3:] == ('{"version":1,"best_mx":true}', endp_label)
    assert not client.quit_sent and not connection.closed
    # A second session of the same request: endpoint only.
    cache.session_done(FakeConnection(), FakeClient(), ADDRESS, time.time(), True, SITE)
    assert [entry[0] for entry in fake.saved] == ["endp", "dest", "endp"]


def test_sessions_that_must_not_be_cached_end_with_quit(tmp_path, monkeypatch):
    cache, fake = started(tmp_path, monkeypatch, "smtp_connection_reuse_time_limit = 10s\n")
    tainted = FakeClient(reusable=False)                   # protocol error, garbage ...
    closed = FakeClient(reusable=False, state="CLOSED")    # I/O error, QUIT
    old = FakeClient()
    connections = [FakeConnection() for _ in range(3)]
    cache.session_done(connections[0], tainted, ADDRESS, time.time(), True, SITE)
    cache.session_done(connections[1], closed, ADDRESS, time.time(), True, SITE)
    cache.session_done(connections[2], old, ADDRESS, time.time() - 11, True, SITE)
    assert fake.saved == []
    assert [client.quit_sent for client in (tainted, closed, old)] == [True, False, True]
    assert [connection.closed for connection in connections] == [True, False, True]
    # A bad session keeps the destination binding for the next good one (Postfix).
    assert cache.nexthop_label is None      # the old-but-good session used it up
    cache2, fake2 = started(tmp_path, monkeypatch)
    cache2.session_done(FakeConnection(), FakeClient(reusable=False), ADDRESS, time.time(), True,
                        SITE)
    cache2.session_done(FakeConnection(), FakeClient(), ADDRESS, time.time(), False, SITE)
    assert [entry[0] for entry in fake2.saved] == ["endp", "dest"]


def test_without_caching_nothing_happens_after_a_session(tmp_path, monkeypatch):
    cache, fake = started(tmp_path, monkeypatch, use=False, store=False)
    client = FakeClient()
    cache.session_done(FakeConnection(), client, ADDRESS, time.time(), True, SITE)
    assert fake.saved == [] and not client.quit_sent


def test_store_without_load_does_not_look_up(tmp_path, monkeypatch):
    cache, _ = started(tmp_path, monkeypatch, use=False, store=True)
    assert list(cache.reuse_sessions(SITE, Resolution(SITE, [ADDRESS]), [ADDRESS], None)) == []
    assert cache.reuse_address(ADDRESS, Resolution(SITE, [ADDRESS]), None) is None


def test_a_cached_descriptor_that_does_not_fit_its_properties_is_closed(tmp_path, monkeypatch,
                                                                         caplog):
    caplog.set_level("INFO", logger="postclient")
    cache, _ = started(tmp_path, monkeypatch)
    for properties, warning in [("garbage", "bad cached session attribute for label"),
                                (reuse.encode_endpoint(ADDRESS, Capabilities(), time.time()),
                                 "is not connected to mx.example.com[192.0.2.1]:25")]:
        ours, cached = socket.socketpair()
        fd = cached.detach()
        assert cache._activate(fd, properties, True, None, "label") is None
        ours.settimeout(5)
        assert ours.recv(1) == b""              # closed, never probed
        assert warning in caplog.text


def test_nothing_is_cached_with_sasl_enabled(tmp_path, monkeypatch):
    cache, _ = started(tmp_path, monkeypatch, "smtp_sasl_auth_enable = yes\n"
                                                 "smtp_connection_cache_destinations = example.com\n")
    assert not cache.active


def test_unusable_capabilities_from_the_cache_are_refused(tmp_path, monkeypatch, caplog):
    caplog.set_level("INFO", logger="postclient")
    cache, _ = started(tmp_path, monkeypatch)
    unix = ServerAddress("localhost", "", None, 0, socket.AF_UNIX)
    properties = reuse.encode_endpoint(unix, Capabilities(), time.time()).replace(
        '"auth":[]', '"auth":5')
    ours, cached = socket.socketpair()
    assert cache._activate(cached.detach(), properties, True, lambda a, b: None, "label") is None
    ours.settimeout(5)
    assert ours.recv(1) == b""
    assert "bad cached session attribute for label" in caplog.text


# --- in-process reuse: the service hands its kept sessions over before the process exits ------

def test_shutdown_hands_every_threads_kept_session_to_scache(monkeypatch):
    """serve() keeps sessions (one per serving thread); shutdown() hands them all over."""
    import threading

    from postclient.smtp import service
    handed = []

    class Kept:
        pid = os.getpid()
        since, ttl = 0, 3600

        def __init__(self, name):
            self.name = name

        def hand_over(self):
            handed.append(self.name)

    monkeypatch.setattr(reuse, "HOLD_IDLE", 3600)      # the idle worker must not do it first
    monkeypatch.setattr(reuse, "_held", {})
    together = threading.Barrier(3)        # alive at once: three distinct thread idents

    def serving_thread(name):
        reuse._publish(Kept(name))
        together.wait(10)

    threads = [threading.Thread(target=serving_thread, args=(f"t{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reuse._publish(Kept("main"))
    assert handed == [] and len(reuse._held) == 4
    service.shutdown(None)
    assert sorted(handed) == ["main", "t0", "t1", "t2"] and reuse._held == {}
