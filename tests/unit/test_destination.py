"""Next-hop parsing (postclient.smtp.destination): every form, every malformed one."""

import pytest

from postclient.config.config import Config, parse_override
from postclient.smtp.destination import (DestinationError, Endpoint, Site, endpoint_label,
                                         iter_sites, parse_port, parse_site, parse_sites,
                                         valid_hostaddr, valid_hostname)


def config(*settings):
    return Config("/nonexistent", overrides=[parse_override(s) for s in settings])


# --- SMTP forms ----------------------------------------------------------------

@pytest.mark.parametrize("text, host, port, bracketed", [
    ("example.com", "example.com", 25, False),
    ("example.com:2525", "example.com", 2525, False),
    ("example.com:submission", "example.com", 587, False),
    ("example.com:smtp", "example.com", 25, False),
    ("example.com:", "example.com", 25, False),
    ("[mx.example.com]", "mx.example.com", 25, True),
    ("[mx.example.com]:587", "mx.example.com", 587, True),
    ("[mx.example.com]:", "mx.example.com", 25, True),
    ("[192.0.2.1]", "192.0.2.1", 25, True),
    ("[192.0.2.1]:2525", "192.0.2.1", 2525, True),
    ("[ipv6:2001:db8::1]", "2001:db8::1", 25, True),
    ("[IPv6:2001:db8::1]:2525", "2001:db8::1", 2525, True),
    ("[2001:db8::1]:smtps", "2001:db8::1", 465, True),
    ("192.0.2.1", "192.0.2.1", 25, False),
    ("under_score.example", "under_score.example", 25, False),
    ("bücher.example", "bücher.example", 25, False),
])
def test_smtp_forms(text, host, port, bracketed):
    site = parse_site(text)
    assert (site.host, site.port, site.bracketed) == (host, port, bracketed)
    assert site.text == text and site.protocol == "smtp" and not site.is_unix
    assert site.loop_detection == (port == 25)


def test_service_name_from_etc_services_and_known_ports():
    assert parse_port("smtp") == 25 and parse_port("lmtp") == 24
    assert parse_port("submissions") == 465 and parse_port("SMTP") == 25
    assert parse_port("65535") == 65535


def test_numeric_site_is_flagged():
    assert parse_site("[192.0.2.1]").is_numeric
    assert not parse_site("[mx.example.com]").is_numeric


# --- LMTP forms ------------------------------------------------------------------

@pytest.mark.parametrize("text, host, port, bracketed", [
    ("inet:lmtp.example.com", "lmtp.example.com", 24, False),
    ("inet:lmtp.example.com:2424", "lmtp.example.com", 2424, False),
    ("inet:[192.0.2.7]:lmtp", "192.0.2.7", 24, True),
    ("lmtp.example.com", "lmtp.example.com", 24, False),
    ("lmtp.example.com:2400", "lmtp.example.com", 2400, False),
    ("[ipv6:::1]:2400", "::1", 2400, True),
])
def test_lmtp_inet_forms(text, host, port, bracketed):
    (site,) = parse_sites(text, "lmtp")
    assert (site.host, site.port, site.bracketed) == (host, port, bracketed)
    assert not site.loop_detection


def test_lmtp_unix_is_one_final_site_without_fallback(caplog):
    sites = parse_sites("unix:/var/run/dovecot/lmtp", "lmtp",
                        config("lmtp_fallback_relay=relay.example"))
    assert 'ignoring "lmtp_fallback_relay = relay.example"' in caplog.text
    assert len(sites) == 1
    (site,) = sites
    assert site.is_unix and site.unix_path == "/var/run/dovecot/lmtp" and site.is_last
    assert site.host is None and site.port is None and not site.loop_detection


def test_lmtp_default_port_comes_from_lmtp_tcp_port():
    (site,) = parse_sites("lmtp.example.com", "lmtp", config("lmtp_tcp_port=2003"))
    assert site.port == 2003
    (site,) = parse_sites("lmtp.example.com", "lmtp", config("lmtp_tcp_port=smtp"))
    assert site.port == 25


# --- lists and fallback relays -------------------------------------------------------

def test_several_next_hops_then_fallback_relays():
    sites = parse_sites("a.example, [b.example]:2525  c.example", "smtp",
                        config("smtp_fallback_relay=relay1.example, [relay2.example]:587"))
    assert [site.text for site in sites] == ["a.example", "[b.example]:2525", "c.example",
                                             "relay1.example", "[relay2.example]:587"]
    assert [site.is_fallback for site in sites] == [False, False, False, True, True]
    assert [site.index for site in sites] == [0, 1, 2, 3, 4]
    assert [site.is_last for site in sites] == [False, False, False, False, True]


def test_fallback_relay_defaults_to_fallback_relay_parameter():
    sites = parse_sites("example.com", "smtp", config("fallback_relay=old.example"))
    assert [(site.host, site.is_fallback) for site in sites] == [
        ("example.com", False), ("old.example", True)]


def test_lmtp_fallback_relay_is_its_own_parameter():
    sites = parse_sites("inet:lmtp.example", "lmtp",
                        config("smtp_fallback_relay=smtp.example",
                               "lmtp_fallback_relay=lmtp2.example"))
    assert [site.host for site in sites] == ["lmtp.example", "lmtp2.example"]
    assert sites[1].port == 24


def test_explicit_arguments_override_config():
    sites = parse_sites("example.com", "smtp", config("smtp_fallback_relay=x.example"),
                        fallback_relay=["[y.example]"])
    assert [site.text for site in sites] == ["example.com", "[y.example]"]


def test_no_config_means_no_fallback():
    (site,) = parse_sites("example.com")
    assert site.is_last and not site.is_fallback


def test_bad_fallback_relay_fails_only_when_reached():
    sites = iter_sites("good.example", "smtp", fallback_relay=["[bad"])
    first = next(sites)
    assert first.host == "good.example" and not first.is_last
    with pytest.raises(DestinationError) as caught:
        next(sites)
    assert caught.value.is_fallback and caught.value.dsn == "4.3.5"
    assert "fallback relay" in caught.value.text


# --- labels --------------------------------------------------------------------------

def test_endpoint_label():
    assert endpoint_label("mx.example.com", "192.0.2.1", 25) == "mx.example.com[192.0.2.1]:25"
    assert endpoint_label("mx.example.com", "2001:db8::1", 25) == \
        "mx.example.com[2001:db8::1]:25"
    assert endpoint_label("host.example", "/var/run/lmtp") == "host.example[/var/run/lmtp]"
    assert str(Endpoint("h", "192.0.2.1", 587)) == "h[192.0.2.1]:587"


# --- malformed destinations ----------------------------------------------------------

MALFORMED_SMTP = [
    "[mx.example.com",              # missing "]"
    "[mx.example.com]x",            # garbage after "]"
    "[mx.example.com]:25x",
    "[ipv6:1.2.3.4]",               # malformed IPv6 address
    "[ipv6:zzzz::1]",
    "[]",                           # missing host
    "[]:25",
    ":25",
    "example.com:0",                # bad port
    "example.com:65536",
    "example.com:99999999999999999999",
    "example.com:25x",              # garbage after numerical service
    "example.com:no-such-service-here",
    "exa mple.com",                 # (one of two sites) -- see test below
    "-bad.example",
    "bad-.example",
    "bad..example",
    "bad.example.",
    "a" * 64 + ".example",
    ".".join(["abcdefghij"] * 26),  # longer than 255
    "123.456",                      # numeric, not an address
    "1.2.3.999",
    "[1.2.3.999]",
    "ex!ample.com",
    "exa\x00mple.com",
    "[::1%eth0]",
    "unix:/var/run/lmtp",           # UNIX-domain is for LMTP only
    "bad\udcffhost.example",
    "xn--bad-\u0300.example" * 20,
]


@pytest.mark.parametrize("text", MALFORMED_SMTP)
def test_malformed_smtp_destination_gives_the_dedicated_error(text):
    try:
        sites = parse_sites(text)
    except DestinationError as error:
        assert error.dsn == "4.3.5" and error.status.dsn == "4.3.5"
        assert error.status.text == error.text and error.text
        assert error.destination in text
        return
    # Only the whitespace case splits into two valid sites.
    assert text == "exa mple.com" and [s.host for s in sites] == ["exa", "mple.com"]


MALFORMED_LMTP = [
    "unix:",
    "unix:   ",
    "unix:/" + "x" * 200,
    "unix:/tmp/a\x00b",
    "inet:",
    "inet:[host",
    "inet:host:0",
    "inet:host:nosuchservice",
    "lmtp.example, unix:/tmp/socket",
]


@pytest.mark.parametrize("text", MALFORMED_LMTP)
def test_malformed_lmtp_destination_gives_the_dedicated_error(text):
    with pytest.raises(DestinationError) as caught:
        parse_sites(text, "lmtp")
    assert caught.value.dsn == "4.3.5"


@pytest.mark.parametrize("text", ["", "   ", ",", " , ,\t"])
def test_empty_next_hop(text):
    with pytest.raises(DestinationError) as caught:
        parse_sites(text)
    assert caught.value.dsn == "4.3.5"


def test_bad_lmtp_tcp_port_is_a_destination_error():
    with pytest.raises(DestinationError):
        parse_sites("lmtp.example", "lmtp", config("lmtp_tcp_port=0"))


def test_malformed_text_from_every_byte_never_escapes_as_another_exception():
    for code in range(0, 0x250):
        for template in ("[h{}]", "h{}.example:25", "[ipv6:{}]", "h.example:{}", "{}"):
            text = template.format(chr(code))
            try:
                parse_sites(text)
                parse_sites(text, "lmtp")
            except DestinationError:
                pass


# --- name syntax ---------------------------------------------------------------------

def test_valid_hostname_follows_postfix():
    assert valid_hostname("mx.example.com") and valid_hostname("a_b.example")
    assert valid_hostname("1.example") and valid_hostname("example")
    assert not valid_hostname("1.2.3.4") and not valid_hostname("")
    assert not valid_hostname("a..b") and not valid_hostname("-a.b")


def test_valid_hostaddr():
    assert valid_hostaddr("192.0.2.1") and valid_hostaddr("::1")
    assert not valid_hostaddr("fe80::1%eth0") and not valid_hostaddr("192.0.2")


def test_site_is_immutable():
    site = parse_site("example.com")
    assert isinstance(site, Site)
    with pytest.raises(Exception):
        site.host = "other"
