"""Resolution (postclient.smtp.resolve) against a real dnsmasq and a scripted responder.

The zones are described in tests/integration/dns_server.py (standard_zones()).
Every test sets inet_interfaces = 127.0.0.1 so that only that address is
"this machine"; the MX hosts are 127.0.0.2, 127.0.0.3 ...
"""

import random
import socket
import time

import pytest

from postclient.config.config import Config, parse_override
from postclient.smtp.destination import parse_site, parse_sites
from postclient.smtp.resolve import (CNAME_LIMIT, RR_LIMIT, DnsClient, LocalAddresses,
                                     ResolverSettings, interface_addresses,
                                     parse_resolver_address, resolve_site)
pytest_plugins = ["tests.integration.dns_server"]     # fixtures dnsmasq_server, scripted_dns
pytestmark = pytest.mark.integration


def settings_for(server, **changes):
    base = dict(resolver_addresses=(server.resolver_address,), inet_interfaces=("127.0.0.1",),
                mx_address_limit=0, randomize=False)
    base.update(changes)
    return ResolverSettings(**base)


def resolve(text, settings, protocol="smtp", timeout=5.0, **options):
    (site,) = parse_sites(text, protocol)
    return resolve_site(site, settings, deadline=time.monotonic() + timeout, **options)


def addresses(resolution):
    return [server.address for server in resolution.addresses]


# --- MX order and randomisation ----------------------------------------------------------

def test_mx_preference_order(dnsmasq_server):
    result = resolve("mx-order.test", settings_for(dnsmasq_server, randomize=True))
    assert [(s.name, s.address, s.port, s.preference, s.family) for s in result.addresses] == [
        ("mx1.mx-order.test", "127.0.0.2", 25, 10, socket.AF_INET),
        ("mx2.mx-order.test", "127.0.0.3", 25, 20, socket.AF_INET),
        ("mx3.mx-order.test", "127.0.0.4", 25, 30, socket.AF_INET)]
    assert result.status is None and result.mx_lookup and not result.final
    assert result.best_preference == 10
    assert result.addresses[0].endpoint == "mx1.mx-order.test[127.0.0.2]:25"


def test_equal_preferences_are_shuffled_when_randomize_is_on(dnsmasq_server):
    settings = settings_for(dnsmasq_server, randomize=True)
    orders = {tuple(addresses(resolve("equal-pref.test", settings))) for _ in range(30)}
    # Three equal MX hosts, 30 tries: the same host first every time has odds 3**-29.
    assert len({order[0] for order in orders}) >= 2, orders
    assert all(sorted(order) == ["127.0.0.2", "127.0.0.3", "127.0.0.4"] for order in orders)


def test_equal_preferences_keep_one_order_when_randomize_is_off(dnsmasq_server):
    settings = settings_for(dnsmasq_server, randomize=False)
    orders = {tuple(addresses(resolve("equal-pref.test", settings))) for _ in range(15)}
    assert len(orders) == 1


def test_randomize_never_breaks_preference_order(dnsmasq_server):
    settings = settings_for(dnsmasq_server, randomize=True)
    for seed in range(10):
        result = resolve("mx-order.test", settings, rng=random.Random(seed))
        assert addresses(result) == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]


def test_mx_address_limit(dnsmasq_server):
    limited = resolve("many-mx.test", settings_for(dnsmasq_server, mx_address_limit=5))
    assert addresses(limited) == [f"127.0.0.{n}" for n in range(2, 7)]
    unlimited = resolve("many-mx.test", settings_for(dnsmasq_server, mx_address_limit=0))
    assert len(unlimited.addresses) == 7


def test_dead_primary_is_listed_first_for_the_connection_loop(dnsmasq_server):
    result = resolve("dead-primary.test:2525", settings_for(dnsmasq_server))
    assert [(s.name, s.address, s.port) for s in result.addresses] == [
        ("primary.dead-primary.test", "127.0.0.2", 2525),
        ("backup.dead-primary.test", "127.0.0.3", 2525)]


# --- implicit MX, NXDOMAIN, null MX ----------------------------------------------------------

def test_implicit_mx_when_the_domain_has_no_mx_records(dnsmasq_server):
    result = resolve("implicit.test", settings_for(dnsmasq_server))
    assert [(s.name, s.address, s.preference) for s in result.addresses] == [
        ("implicit.test", "127.0.0.2", 0)]
    assert not result.mx_lookup and result.status is None


def test_nxdomain_is_host_not_found(dnsmasq_server):
    result = resolve("nxdomain.test", settings_for(dnsmasq_server))
    assert result.addresses == []
    assert result.status.dsn == "5.4.4"
    assert result.status.text == ("Host or domain name not found. Name service error for "
                                  "name=nxdomain.test type=A: Host not found")
    assert not result.final


def test_null_mx(dnsmasq_server):
    result = resolve("nullmx.test", settings_for(dnsmasq_server))
    assert result.addresses == []
    assert (result.status.dsn, result.status.text) == (
        "5.1.0", "Domain nullmx.test does not accept mail (nullMX)")


def test_null_mx_is_not_overridden_by_ignore_mx_lookup_error(dnsmasq_server):
    result = resolve("nullmx.test", settings_for(dnsmasq_server, ignore_mx_lookup_error=True))
    assert result.status.dsn == "5.1.0" and result.addresses == []


def test_mx_host_without_address(dnsmasq_server):
    result = resolve("noaddr.test", settings_for(dnsmasq_server))
    assert result.addresses == [] and result.status.dsn == "5.4.4"
    assert "name=gone.noaddr.test type=A" in result.status.text
    assert "no MX host for noaddr.test has a valid address record" in result.warnings
    soft = resolve("noaddr.test", settings_for(dnsmasq_server,
                                               defer_if_no_mx_address_found=True))
    assert soft.status.dsn == "4.4.4" and soft.status.text == result.status.text


def test_fallback_relay_host(dnsmasq_server):
    sites = parse_sites("nxdomain.test", "smtp", fallback_relay=["relay.test"])
    settings = settings_for(dnsmasq_server)
    results = [resolve_site(site, settings, deadline=time.monotonic() + 5) for site in sites]
    assert results[0].status.dsn == "5.4.4"
    assert sites[1].is_fallback and addresses(results[1]) == ["127.0.0.5"]


# --- bracketed and numeric destinations, LMTP ------------------------------------------------

def test_bracketed_destination_skips_mx(dnsmasq_server):
    result = resolve("[mx1.mx-order.test]", settings_for(dnsmasq_server))
    assert [(s.name, s.address, s.preference) for s in result.addresses] == [
        ("mx1.mx-order.test", "127.0.0.2", 0)]
    domain_only = resolve("[mx-order.test]", settings_for(dnsmasq_server))
    assert domain_only.addresses == [] and domain_only.status.dsn == "5.4.4"
    assert "type=A: Host found but no data record of requested type" in domain_only.status.text


def test_bracketed_destination_asks_no_mx_question(scripted_dns):
    scripted_dns.records("br.test", "MX", "10 other.test.").records("br.test", "A", "127.0.0.7")
    result = resolve("[br.test]", settings_for(scripted_dns))
    assert addresses(result) == ["127.0.0.7"]
    assert [(name, kind) for name, kind, _ in scripted_dns.queries] == [("br.test", "A")]


def test_numeric_destination_needs_no_dns(scripted_dns):
    result = resolve("[127.0.0.3]:2525", settings_for(scripted_dns))
    assert [(s.name, s.address, s.port) for s in result.addresses] == [
        ("127.0.0.3", "127.0.0.3", 2525)]
    assert scripted_dns.queries == []


def test_ipv6_literal_with_ipv4_only_is_not_found(scripted_dns):
    result = resolve("[ipv6:::1]:2525", settings_for(scripted_dns))
    assert result.addresses == [] and result.status.dsn == "5.4.4"
    both = resolve("[ipv6:::1]:2525", settings_for(
        scripted_dns, families=(socket.AF_INET, socket.AF_INET6)))
    assert [(s.address, s.family) for s in both.addresses] == [("::1", socket.AF_INET6)]
    assert both.addresses[0].sockaddr == ("::1", 2525, 0, 0)


def test_lmtp_inet_does_a_host_lookup(dnsmasq_server):
    result = resolve("inet:mx1.mx-order.test:2424", settings_for(dnsmasq_server), "lmtp")
    assert [(s.address, s.port) for s in result.addresses] == [("127.0.0.2", 2424)]
    result = resolve("mx-order.test", settings_for(dnsmasq_server), "lmtp")
    assert result.addresses == [] and "type=A" in result.status.text


def test_lmtp_unix_socket_needs_no_lookup():
    (site,) = parse_sites("unix:/run/lmtp.sock", "lmtp")
    result = resolve_site(site, ResolverSettings(myhostname="relay.example"),
                          deadline=time.monotonic() + 1)
    (server,) = result.addresses
    assert server.family == socket.AF_UNIX and server.sockaddr == "/run/lmtp.sock"
    assert server.endpoint == "relay.example[/run/lmtp.sock]"


# --- address families -------------------------------------------------------------------------

def test_inet_protocols_ipv4_only(dnsmasq_server):
    result = resolve("dual.test", settings_for(dnsmasq_server, families=(socket.AF_INET,)))
    assert [(s.address, s.family) for s in result.addresses] == [("127.0.0.2", socket.AF_INET)]


def test_inet_protocols_all(dnsmasq_server):
    result = resolve("dual.test", settings_for(
        dnsmasq_server, families=(socket.AF_INET, socket.AF_INET6)))
    assert sorted((s.address, s.family) for s in result.addresses) == [
        ("127.0.0.2", socket.AF_INET), ("::1", socket.AF_INET6)]
    assert {s.preference for s in result.addresses} == {10}


def test_inet_protocols_ipv6_only(dnsmasq_server):
    result = resolve("dual.test", settings_for(dnsmasq_server, families=(socket.AF_INET6,)))
    assert addresses(result) == ["::1"]


def test_no_protocols_at_all(dnsmasq_server):
    result = resolve("dual.test", settings_for(dnsmasq_server, families=()))
    assert result.status.dsn == "4.4.4" and result.addresses == []


# --- mail loops -------------------------------------------------------------------------------

def test_mx_pointing_at_this_machine_loops_back(dnsmasq_server):
    result = resolve("loop.test", settings_for(dnsmasq_server))
    assert result.addresses == []
    assert (result.status.dsn, result.status.text) == (
        "5.4.6", "mail for loop.test loops back to myself")
    assert result.local_is_mx and result.loops_back and result.final


def test_backup_mx_keeps_only_better_servers(dnsmasq_server):
    result = resolve("backup-mx.test", settings_for(dnsmasq_server))
    assert addresses(result) == ["127.0.0.2"]
    assert result.local_is_mx and result.final and not result.loops_back


def test_backup_mx_without_reachable_primary(dnsmasq_server):
    result = resolve("no-primary.test", settings_for(dnsmasq_server))
    assert result.addresses == []
    assert (result.status.dsn, result.status.text) == (
        "4.4.4", "unable to find primary relay for no-primary.test")
    assert result.local_is_mx and result.final and not result.loops_back


def test_no_loop_detection_on_other_ports(dnsmasq_server):
    result = resolve("loop.test:2525", settings_for(dnsmasq_server))
    assert addresses(result) == ["127.0.0.1"] and not result.local_is_mx
    assert result.status is None


def test_no_loop_detection_for_lmtp(dnsmasq_server):
    result = resolve("inet:self.loop.test:25", settings_for(dnsmasq_server), "lmtp")
    assert addresses(result) == ["127.0.0.1"]


def test_bracketed_host_that_is_this_machine(dnsmasq_server):
    result = resolve("[self.loop.test]", settings_for(dnsmasq_server))
    assert result.addresses == [] and result.status.dsn == "5.4.6"
    assert result.status.text == "mail for self.loop.test loops back to myself"
    assert result.final and not result.local_is_mx


def test_proxy_interfaces_count_as_this_machine(dnsmasq_server):
    result = resolve("mx-order.test", settings_for(dnsmasq_server,
                                                   proxy_interfaces=("127.0.0.3",)))
    assert addresses(result) == ["127.0.0.2"] and result.local_is_mx


def test_only_the_listed_inet_interfaces_are_local(dnsmasq_server):
    settings = settings_for(dnsmasq_server, inet_interfaces=("127.0.0.1",))
    assert len(resolve("mx-order.test", settings).addresses) == 3
    everything = settings_for(dnsmasq_server, inet_interfaces=("all",))
    result = resolve("mx-order.test", everything)
    assert result.addresses == [] and result.status.dsn == "5.4.6"


def test_unresolvable_inet_interfaces_name_is_a_configuration_error(dnsmasq_server):
    settings = settings_for(dnsmasq_server, inet_interfaces=("no-such-host.invalid",))
    result = resolve("mx-order.test", settings)
    assert result.addresses == [] and result.status.dsn == "4.3.5"


# --- CNAMEs -----------------------------------------------------------------------------------

def test_cname_overrides_servername(dnsmasq_server):
    plain = resolve("cname-mx.test", settings_for(dnsmasq_server))
    assert [(s.name, s.address) for s in plain.addresses] == [("alias.cname-mx.test",
                                                              "127.0.0.2")]
    override = resolve("cname-mx.test", settings_for(dnsmasq_server,
                                                     cname_overrides_servername=True))
    assert [(s.name, s.query_name) for s in override.addresses] == [
        ("real.cname-mx.test", "alias.cname-mx.test")]


def _cname_chain(responder, length, chase):
    responder.chase_cnames = chase
    for hop in range(length):
        responder.cname(f"c{hop}.chain.test", f"c{hop + 1}.chain.test")
    responder.records(f"c{length}.chain.test", "A", "127.0.0.9")


@pytest.mark.parametrize("chase", [True, False])
def test_cname_chain_up_to_the_limit_is_followed(scripted_dns, chase):
    _cname_chain(scripted_dns, CNAME_LIMIT, chase)
    result = resolve("[c0.chain.test]", settings_for(scripted_dns, cname_overrides_servername=True))
    assert [(s.name, s.address) for s in result.addresses] == [
        (f"c{CNAME_LIMIT}.chain.test", "127.0.0.9")]


@pytest.mark.parametrize("chase", [True, False])
def test_cname_chain_beyond_the_limit_is_a_loop(scripted_dns, chase):
    _cname_chain(scripted_dns, CNAME_LIMIT + 1, chase)
    result = resolve("[c0.chain.test]", settings_for(scripted_dns))
    assert result.addresses == [] and result.status.dsn == "5.4.4"
    assert result.status.text.startswith("Name server loop for ")


@pytest.mark.parametrize("chase", [True, False])
def test_cname_loop(scripted_dns, chase):
    scripted_dns.chase_cnames = chase
    scripted_dns.cname("a.loop.test", "b.loop.test").cname("b.loop.test", "a.loop.test")
    started = time.monotonic()
    result = resolve("a.loop.test", settings_for(scripted_dns))
    assert time.monotonic() - started < 3
    assert result.addresses == [] and result.status.dsn == "5.4.4"
    assert result.status.text.startswith("Name server loop for ")
    assert len(scripted_dns.queries) <= 2 * (CNAME_LIMIT + 1)     # MX, then A (implicit MX)


# --- caps -------------------------------------------------------------------------------------

def test_more_than_100_address_records_are_capped(scripted_dns):
    scripted_dns.records("big.test", "A", *[f"10.0.{n // 200}.{n % 200 + 1}" for n in range(150)])
    result = resolve("[big.test]", settings_for(scripted_dns))
    assert len(result.addresses) == RR_LIMIT
    assert addresses(result)[:2] == ["10.0.0.1", "10.0.0.2"]
    assert any("record limit (100) exceeded" in text for text in result.warnings)
    # Too big for 512 bytes: truncated over UDP, then asked again over TCP.
    assert [transport for _, _, transport in scripted_dns.queries] == ["udp", "tcp"]


def test_more_than_100_mx_records_are_capped(scripted_dns):
    scripted_dns.records("bigmx.test", "MX",
                         *[f"{n} mx{n}.bigmx.test." for n in range(130)])
    for n in range(130):
        scripted_dns.records(f"mx{n}.bigmx.test", "A", f"10.1.0.{n + 1}")
    result = resolve("bigmx.test", settings_for(scripted_dns), timeout=20)
    assert len(result.addresses) == RR_LIMIT
    assert [s.preference for s in result.addresses] == sorted(s.preference
                                                              for s in result.addresses)
    assert any("while looking up MX records" in text for text in result.warnings)


def test_truncated_reply_is_retried_over_tcp(scripted_dns):
    scripted_dns.records("tc.test", "A", "127.0.0.8").truncate("tc.test", "A")
    result = resolve("[tc.test]", settings_for(scripted_dns))
    assert addresses(result) == ["127.0.0.8"]
    assert [transport for _, _, transport in scripted_dns.queries] == ["udp", "tcp"]


# --- server failures and time -------------------------------------------------------

def test_servfail_is_a_temporary_failure(scripted_dns):
    scripted_dns.rcode("sf.test", "SERVFAIL", "MX").records("sf.test", "A", "127.0.0.6")
    result = resolve("sf.test", settings_for(scripted_dns))
    assert result.addresses == []
    assert (result.status.dsn, result.status.text) == (
        "4.4.3", "Host or domain name not found. Name service error for name=sf.test "
                 "type=MX: Host not found, try again")


def test_servfail_with_ignore_mx_lookup_error_looks_up_addresses(scripted_dns):
    scripted_dns.rcode("sf.test", "SERVFAIL", "MX").records("sf.test", "A", "127.0.0.6")
    result = resolve("sf.test", settings_for(scripted_dns, ignore_mx_lookup_error=True))
    assert [(s.name, s.address, s.preference) for s in result.addresses] == [
        ("sf.test", "127.0.0.6", 0)]
    assert result.status is None


@pytest.mark.parametrize("rcode, dsn", [("REFUSED", "4.4.3"), ("NOTIMP", "4.4.3"),
                                        ("FORMERR", "5.4.3"), ("YXDOMAIN", "5.4.3")])
def test_other_error_codes(scripted_dns, rcode, dsn):
    scripted_dns.rcode("err.test", rcode)
    result = resolve("err.test", settings_for(scripted_dns))
    assert result.status.dsn == dsn and result.addresses == []


def test_failure_of_one_mx_host_does_not_stop_the_others(scripted_dns):
    scripted_dns.records("part.test", "MX", "10 broken.part.test.", "20 fine.part.test.")
    scripted_dns.rcode("broken.part.test", "SERVFAIL").records("fine.part.test", "A",
                                                               "127.0.0.3")
    result = resolve("part.test", settings_for(scripted_dns))
    assert addresses(result) == ["127.0.0.3"]
    assert result.status.dsn == "4.4.3"          # remembered, as Postfix's "why"


def test_soft_mx_host_failure_is_not_made_hard_by_a_later_one(scripted_dns):
    scripted_dns.records("mixed.test", "MX", "10 broken.mixed.test.", "20 gone.mixed.test.")
    scripted_dns.rcode("broken.mixed.test", "SERVFAIL")
    result = resolve("mixed.test", settings_for(scripted_dns))
    assert result.addresses == [] and result.status.dsn == "4.4.4"
    assert "name=gone.mixed.test type=A: Host not found" in result.status.text


def test_garbage_reply_is_a_temporary_failure(scripted_dns):
    scripted_dns.garbage("junk.test")
    started = time.monotonic()
    result = resolve("junk.test", settings_for(scripted_dns), timeout=0.5)
    assert result.status.dsn == "4.4.3"
    assert time.monotonic() - started < 1.5


def test_silent_server_times_out_at_the_deadline(scripted_dns):
    scripted_dns.silent("slow.test")
    started = time.monotonic()
    result = resolve("slow.test", settings_for(scripted_dns), timeout=1.0)
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 2.0, elapsed
    assert result.addresses == []
    assert result.status.dsn == "4.4.3" and "type=MX: Host not found, try again" in \
        result.status.text


def test_expired_deadline_asks_nothing(scripted_dns):
    scripted_dns.records("x.test", "MX", "10 y.test.")
    result = resolve("x.test", settings_for(scripted_dns), timeout=0)
    assert result.status.dsn == "4.4.3" and scripted_dns.queries == []


def test_next_nameserver_after_a_silent_one(dnsmasq_server, scripted_dns):
    scripted_dns.default = "silent"
    settings = settings_for(dnsmasq_server, resolver_addresses=(
        scripted_dns.resolver_address, dnsmasq_server.resolver_address))
    client = DnsClient.from_addresses(settings.resolver_addresses, try_timeout=0.2)
    result = resolve("mx-order.test", settings, client=client)
    assert addresses(result) == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert len(scripted_dns.queries) == 4       # MX and three A, each asked there first


def test_next_nameserver_after_one_that_refuses_connections(dnsmasq_server):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        nobody = "127.0.0.1:%d" % probe.getsockname()[1]
    settings = settings_for(dnsmasq_server, resolver_addresses=(
        nobody, dnsmasq_server.resolver_address))
    started = time.monotonic()
    result = resolve("mx-order.test", settings)
    assert addresses(result) == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert time.monotonic() - started < 1.5


def test_bad_dns_resolver_addresses_is_a_configuration_error():
    settings = ResolverSettings(resolver_addresses=("not-an-address",),
                                inet_interfaces=("127.0.0.1",))
    result = resolve("mx-order.test", settings)
    assert result.status.dsn == "4.3.5" and "not-an-address" in result.status.text


# --- native lookups ------------------------------------------------------------------

def test_native_lookup_of_localhost():
    settings = ResolverSettings(dns_enabled=False, host_lookup=("native",),
                                inet_interfaces=("127.0.0.9",), mx_address_limit=0)
    result = resolve("localhost", settings)
    assert ("localhost", "127.0.0.1", 25, 0) in [
        (s.name, s.address, s.port, s.preference) for s in result.addresses]
    assert not result.mx_lookup


def test_native_lookup_of_localhost_on_port_25_loops_back():
    settings = ResolverSettings(dns_enabled=False, host_lookup=("native",),
                                inet_interfaces=("127.0.0.1",))
    result = resolve("localhost", settings)
    assert result.status.dsn == "5.4.6" and result.addresses == []


def test_native_lookup_failure():
    settings = ResolverSettings(dns_enabled=False, host_lookup=("native",),
                                inet_interfaces=("127.0.0.1",))
    result = resolve("no-such-host.invalid", settings, timeout=2)     # system resolver
    assert result.addresses == [] and result.status.dsn in ("5.4.4", "4.4.4")
    assert result.status.text.startswith("unable to look up host no-such-host.invalid: ")


def test_dns_then_native(scripted_dns):
    settings = settings_for(scripted_dns, host_lookup=("dns", "native"))
    result = resolve("[localhost]:2525", settings)
    assert "127.0.0.1" in addresses(result)
    assert [(name, kind) for name, kind, _ in scripted_dns.queries] == [("localhost", "A")]


def test_native_host_lookup_for_mx_hosts(dnsmasq_server):
    # MX records from DNS, the MX hosts' addresses from getaddrinfo (which does not know them).
    result = resolve("mx-order.test", settings_for(dnsmasq_server, host_lookup=("native",)),
                     timeout=2)
    assert result.addresses == [] and result.status.dsn in ("5.4.4", "4.4.4")
    assert result.status.text.startswith("unable to look up host mx3.mx-order.test: ")


# --- settings ------------------------------------------------------------------------

def test_settings_from_config():
    config = Config("/nonexistent", overrides=[parse_override(text) for text in (
        "inet_protocols=all", "smtp_host_lookup=dns, native", "smtp_mx_address_limit=3",
        "lmtp_mx_address_limit=7", "dns_resolver_addresses=127.0.0.1:5353, [::1]:53",
        "inet_interfaces=127.0.0.1", "proxy_interfaces=192.0.2.9",
        "smtp_randomize_addresses=no", "ignore_mx_lookup_error=yes",
        "smtp_cname_overrides_servername=yes", "smtp_defer_if_no_mx_address_found=yes")])
    smtp = ResolverSettings.from_config(config, "smtp")
    assert smtp.families == (socket.AF_INET, socket.AF_INET6)
    assert smtp.host_lookup == ("dns", "native") and smtp.dns_enabled
    assert smtp.mx_address_limit == 3 and not smtp.randomize
    assert smtp.ignore_mx_lookup_error and smtp.cname_overrides_servername
    assert smtp.defer_if_no_mx_address_found
    assert smtp.resolver_addresses == ("127.0.0.1:5353", "[::1]:53")
    assert smtp.inet_interfaces == ("127.0.0.1",) and smtp.proxy_interfaces == ("192.0.2.9",)
    lmtp = ResolverSettings.from_config(config, "lmtp")
    assert lmtp.mx_address_limit == 7 and lmtp.randomize
    defaults = ResolverSettings.from_config(Config("/nonexistent"), "smtp")
    assert defaults.families == (socket.AF_INET,) and defaults.mx_address_limit == 5
    assert defaults.inet_interfaces == ("all",) and defaults.randomize


def test_disable_dns_lookups_means_native_only():
    config = Config("/nonexistent", overrides=[parse_override("disable_dns_lookups=yes")])
    settings = ResolverSettings.from_config(config)
    assert not settings.dns_enabled and settings.host_lookup == ("native",)


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1", ("127.0.0.1", 53)), ("127.0.0.1:5353", ("127.0.0.1", 5353)),
    ("[::1]:5353", ("::1", 5353)), ("[::1]", ("::1", 53)), ("::1", ("::1", 53)),
    ("2001:db8::1", ("2001:db8::1", 53))])
def test_parse_resolver_address(text, expected):
    assert parse_resolver_address(text) == expected


@pytest.mark.parametrize("text", ["dns.example", "127.0.0.1:0", "127.0.0.1:x", "[::1",
                                  "[::1]x", "1.2.3.4:99999", ""])
def test_parse_resolver_address_rejects(text):
    with pytest.raises(ValueError):
        parse_resolver_address(text)


def test_local_addresses():
    explicit = LocalAddresses.from_settings(["127.0.0.1", "[::1]"], ["192.0.2.77"])
    assert "127.0.0.1" in explicit and "::1" in explicit and "192.0.2.77" in explicit
    assert "127.0.0.2" not in explicit and "::ffff:127.0.0.1" in explicit
    everything = LocalAddresses.from_settings(["all"])
    assert "127.0.0.2" in everything and "127.255.0.1" in everything and "::1" in everything
    assert all(address in everything for address in interface_addresses())
    assert "192.0.2.200" not in LocalAddresses.from_settings(["loopback-only"])


def test_site_from_fallback_list_resolves_like_any_other(dnsmasq_server):
    site = parse_site("[relay.test]:2525", is_fallback=True)
    result = resolve_site(site, settings_for(dnsmasq_server), deadline=time.monotonic() + 5)
    assert [s.endpoint for s in result.addresses] == ["relay.test[127.0.0.5]:2525"]
