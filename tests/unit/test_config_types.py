"""Every parameter type, with good and bad values, through main.cf."""

import pytest

from postclient.config.config import Config
from postclient.config.errors import ConfigError
from postclient.config.types import split_list


def value(tmp_path, name, text):
    (tmp_path / "main.cf").write_text(f"# line 1\n{name} = {text}\n")
    return Config.load(str(tmp_path)).get(name)


@pytest.mark.parametrize("text, expected", [("yes", True), ("no", False), ("YES", True), ("No", False)])
def test_boolean_good(tmp_path, text, expected):
    assert value(tmp_path, "smtp_skip_quit_response", text) is expected


@pytest.mark.parametrize("text", ["maybe", "1", ""])
def test_boolean_bad(tmp_path, text):
    with pytest.raises(ConfigError, match=r"main.cf:2: smtp_skip_quit_response: bad boolean value .*expected yes or no"):
        value(tmp_path, "smtp_skip_quit_response", text)


def test_integer_good_and_bounds(tmp_path):
    assert value(tmp_path, "smtp_mx_address_limit", "0") == 0
    assert value(tmp_path, "smtp_line_length_limit", " 998 ") == 998
    with pytest.raises(ConfigError, match=r"main.cf:2: smtp_mx_address_limit: value \"-1\" is below the minimum 0"):
        value(tmp_path, "smtp_mx_address_limit", "-1")
    with pytest.raises(ConfigError, match=r"main.cf:2: smtp_tls_loglevel: value \"5\" is above the maximum 4"):
        value(tmp_path, "smtp_tls_loglevel", "5")


@pytest.mark.parametrize("text", ["ten", "1.5", "10s", ""])
def test_integer_bad(tmp_path, text):
    with pytest.raises(ConfigError, match=r"main.cf:2: max_use: bad integer value"):
        value(tmp_path, "max_use", text)


@pytest.mark.parametrize("name, text, seconds", [
    ("smtp_connect_timeout", "30s", 30),
    ("smtp_connect_timeout", "30", 30),
    ("smtp_connect_timeout", "5m", 300),
    ("smtp_connect_timeout", "2h", 7200),
    ("smtp_connect_timeout", "1d", 86400),
    ("smtp_connect_timeout", "1w", 604800),
    ("smtp_connect_timeout", "5M", 300),
    ("maximal_queue_lifetime", "5", 5 * 86400),   # bare number: default unit d
    ("delay_warning_time", "4", 4 * 3600),        # default unit h
    ("lmtp_connect_timeout", "0", 0),
])
def test_time_good(tmp_path, name, text, seconds):
    assert value(tmp_path, name, text) == seconds


def test_time_bad_has_the_documented_message(tmp_path):
    with pytest.raises(ConfigError) as caught:
        value(tmp_path, "smtp_connect_timeout", "3x")
    assert str(caught.value).endswith(
        'main.cf:2: smtp_connect_timeout: bad time value "3x" (expected e.g. 30s, 5m)')


@pytest.mark.parametrize("text", ["-5s", "5 s", "1h30m", "s", ""])
def test_time_bad(tmp_path, text):
    with pytest.raises(ConfigError, match="bad time value"):
        value(tmp_path, "smtp_helo_timeout", text)


def test_time_below_minimum(tmp_path):
    with pytest.raises(ConfigError, match=r'smtp_helo_timeout: time "0s" is below the minimum 1s'):
        value(tmp_path, "smtp_helo_timeout", "0s")


@pytest.mark.parametrize("text, size", [("10240000", 10240000), ("0", 0), ("10k", 10240), ("2M", 2 * 1024 ** 2)])
def test_size_good(tmp_path, text, size):
    assert value(tmp_path, "message_size_limit", text) == size


@pytest.mark.parametrize("text", ["10 MB", "-1", "big"])
def test_size_bad(tmp_path, text):
    with pytest.raises(ConfigError, match="main.cf:2: message_size_limit: bad size value"):
        value(tmp_path, "message_size_limit", text)


def test_string_and_choices(tmp_path):
    assert value(tmp_path, "relayhost", "  [relay.example]:587  ") == "[relay.example]:587"
    assert value(tmp_path, "smtp_tls_security_level", "") == ""
    assert value(tmp_path, "smtp_tls_security_level", "encrypt") == "encrypt"
    with pytest.raises(ConfigError, match=r'smtp_tls_security_level: bad value "sometimes"'):
        value(tmp_path, "smtp_tls_security_level", "sometimes")
    with pytest.raises(ConfigError, match=r"syslog_facility: bad value"):
        value(tmp_path, "syslog_facility", "mial")


def test_list_good_and_choices(tmp_path):
    assert value(tmp_path, "smtp_fallback_relay", "a, b  c,,d") == ["a", "b", "c", "d"]
    assert value(tmp_path, "smtp_host_lookup", "dns, native") == ["dns", "native"]
    assert value(tmp_path, "smtp_discard_ehlo_keywords", "") == []
    with pytest.raises(ConfigError, match=r'smtp_host_lookup: bad list element "nis"'):
        value(tmp_path, "smtp_host_lookup", "dns, nis")


def test_maps_list(tmp_path):
    assert value(tmp_path, "smtp_generic_maps", "hash:/etc/a, inline:{ x=y, z=w } regexp:/b") == [
        "hash:/etc/a", "inline:{ x=y, z=w }", "regexp:/b"]
    with pytest.raises(ConfigError, match=r'smtp_generic_maps: bad lookup table "/etc/generic"'):
        value(tmp_path, "smtp_generic_maps", "/etc/generic")


def test_split_list_braces():
    assert split_list("{ a b, c } d") == ["{ a b, c }", "d"]
    assert split_list("{ a {nested} b }") == ["{ a {nested} b }"]
    with pytest.raises(ValueError, match="missing"):
        split_list("{ a")


def test_override_errors_name_the_command_line(tmp_path):
    (tmp_path / "main.cf").write_text("")
    config = Config.load(str(tmp_path), ["smtp_connect_timeout=soon"])
    with pytest.raises(ConfigError, match=r'^-o: smtp_connect_timeout: bad time value "soon"'):
        config.get("smtp_connect_timeout")


def test_validate_collects_every_error(tmp_path):
    (tmp_path / "main.cf").write_text("max_use = x\nsmtp_helo_timeout = y\nrelayhost = ok\n")
    errors = Config.load(str(tmp_path)).validate()
    assert sorted(e.line for e in errors) == [1, 2]


@pytest.mark.parametrize("text, ok", [("0", True), ("2", True), ("990", True), ("1", False), ("-1", False)])
def test_line_length_limit_is_zero_or_at_least_two(tmp_path, text, ok):
    if ok:
        assert value(tmp_path, "smtp_line_length_limit", text) == int(text)
        assert value(tmp_path, "lmtp_line_length_limit", text) == int(text)
    else:
        with pytest.raises(ConfigError, match=r"main.cf:2: smtp_line_length_limit: value .* is below the minimum 2"):
            value(tmp_path, "smtp_line_length_limit", text)
