"""cidr: tables (postclient.maps.cidr)."""

import pytest

from postclient.config.errors import ConfigError
from postclient.maps import open_table
from postclient.maps.cidr import parse_network


def cidr(tmp_path, text, name="table"):
    path = tmp_path / name
    path.write_text(text)
    return open_table(f"cidr:{path}")


def cidr_error(tmp_path, text):
    path = tmp_path / "bad"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        open_table(f"cidr:{path}")
    return str(path), str(info.value)


def test_order_and_prefixes(tmp_path):
    table = cidr(tmp_path, "# comment\n192.0.2.1 exact\n192.0.2.0/24 net\n"
                           "10.0.0.0/8 ten\n0.0.0.0/0 any-v4\n")
    assert table.lookup("192.0.2.1") == "exact"
    assert table.lookup("192.0.2.77") == "net"
    assert table.lookup("10.255.1.2") == "ten"
    assert table.lookup("198.51.100.1") == "any-v4"
    assert table.lookup("2001:db8::1") is None     # /0 of IPv4 is IPv4 only
    assert (table.kind, table.fixed_keys) == ("cidr", False)


def test_slash_32_and_slash_0(tmp_path):
    table = cidr(tmp_path, "203.0.113.5/32 one\n::/0 any-v6\n")
    assert table.lookup("203.0.113.5") == "one"
    assert table.lookup("203.0.113.4") is None
    assert table.lookup("::1") == "any-v6"


def test_ipv6_forms_and_brackets(tmp_path):
    table = cidr(tmp_path, "[2001:db8::]/32 bracket-then-len\n[2001:db9::/32] inside\n"
                           "2001:dba::1 exact\n::ffff:192.0.2.0/120 mapped\n"
                           "fe80::/10 link\n2001:dbb::/128 host\n")
    assert table.lookup("2001:db8:1::5") == "bracket-then-len"
    assert table.lookup("2001:DB9:0:0::9") == "inside"
    assert table.lookup("2001:0dba:0000::0001") == "exact"
    assert table.lookup("::ffff:192.0.2.9") == "mapped"
    assert table.lookup("fe80::1") == "link"
    assert table.lookup("2001:dbb::") == "host"
    assert table.lookup("2001:dbb::1") is None


def test_negation_applies_within_the_family_only(tmp_path):
    table = cidr(tmp_path, "!10.0.0.0/8 outside-ten\n")
    assert table.lookup("192.0.2.1") == "outside-ten"
    assert table.lookup("10.1.2.3") is None
    assert table.lookup("2001:db8::1") is None


def test_if_endif_nesting_and_negated_if(tmp_path):
    text = ("if 10.0.0.0/8\n"
            "if !10.1.0.0/16\n"
            "10.2.0.0/16 ten-two\n"
            "0.0.0.0/0 ten-not-one\n"
            "endif\n"
            "10.1.2.0/24 ten-one-two\n"
            "endif\n"
            "IF 2001:db8::/32\n"
            "::/0 doc-v6\n"
            "ENDIF\n"
            "0.0.0.0/0 default\n")
    table = cidr(tmp_path, text)
    assert table.lookup("10.2.3.4") == "ten-two"
    assert table.lookup("10.9.9.9") == "ten-not-one"
    assert table.lookup("10.1.2.3") == "ten-one-two"
    assert table.lookup("10.1.3.3") == "default"
    assert table.lookup("192.0.2.1") == "default"
    assert table.lookup("2001:db8::1") == "doc-v6"
    assert table.lookup("2001:db9::1") is None


def test_if_of_other_family_skips_block(tmp_path):
    table = cidr(tmp_path, "if !10.0.0.0/8\n::/0 inner\nendif\n::/0 outer\n")
    assert table.lookup("::1") == "outer"


def test_values_keep_inner_whitespace(tmp_path):
    table = cidr(tmp_path, "192.0.2.0/24\tREJECT  go away \n")
    assert table.lookup("192.0.2.3") == "REJECT  go away"


@pytest.mark.parametrize("key", ["not-an-ip", "", "[192.0.2.1]", "192.0.2", "fe80::1%eth0",
                                 "192.0.2.1.5", "1:2:3", "192.0.2.001", "\x00", "::g"])
def test_non_ip_keys_are_not_found(tmp_path, key):
    table = cidr(tmp_path, "0.0.0.0/0 v4\n::/0 v6\n")
    assert table.lookup(key) is None


@pytest.mark.parametrize("line, expected", [
    ("192.0.2.1/24 x", 'non-null host address bits in "192.0.2.1/24", perhaps you should'
                       ' use "192.0.2.0/24" instead'),
    ("2001:db8::1/32 x", 'perhaps you should use "2001:db8::/32" instead'),
    ("10.0.0.0/33 x", 'bad mask length in "10.0.0.0/33"'),
    ("::/129 x", "bad mask length"),
    ("10.0.0.0/x x", 'bad mask value in "10.0.0.0/x"'),
    ("10.0.0.0/ x", "bad mask value"),
    ("10.0.0.0/-1 x", "bad mask value"),
    ("300.0.0.0/8 x", "bad network value"),
    ("not-an-address x", 'bad address pattern: "not-an-address"'),
    ("[10.0.0.0/8 x", "missing ']'"),
    ("[10.0.0.0]x x", "garbage after"),
    ("10.0.0.0/8", "no lookup result"),
    ("if 10.0.0.0/8 extra", 'unexpected text after "if"'),
    ("if", "no address pattern"),
    ("endif", "endif without matching if"),
])
def test_errors_name_file_and_line(tmp_path, line, expected):
    path, message = cidr_error(tmp_path, f"# first\n192.0.2.0/24 ok\n{line}\n")
    assert message.startswith(f"{path}:3: "), message
    assert expected in message


def test_unclosed_if_names_its_line(tmp_path):
    path, message = cidr_error(tmp_path, "10.0.0.0/8 a\nif 10.0.0.0/8\n10.0.0.0/16 b\n")
    assert message.startswith(f"{path}:2: ") and "if has no matching endif" in message


def test_inline_rules():
    table = open_table("cidr:{ {10.0.0.0/8 ten}, {!::/0 not-v6} }")
    assert table.lookup("10.0.0.1") == "ten"
    assert table.lookup("192.0.2.1") is None
    with pytest.raises(ConfigError) as info:
        open_table("cidr:{ {10.0.0.1/8 x} }")
    assert str(info.value).startswith("cidr:{ {10.0.0.1/8 x} }:1: non-null host address bits")


def test_parse_network_values():
    import socket
    assert parse_network("10.0.0.0/8") == (socket.AF_INET, 10 << 24, 0xFF000000)
    assert parse_network("0.0.0.0/0") == (socket.AF_INET, 0, 0)
    assert parse_network("::1")[2] == (1 << 128) - 1
