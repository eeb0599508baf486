"""The parameter registry covers both manual pages, with mirrors and sane defaults."""

import os
import re

import pytest

from postclient.config import registry, types
from postclient.config.config import Config

HERE = os.path.dirname(__file__)
FIXTURE = os.path.join(HERE, "..", "fixtures", "manpage-parameters.txt")
SPEC = os.path.join(HERE, "..", "..", "..", "shared", "spec")


def manpage_names():
    with open(FIXTURE) as handle:
        return handle.read().split()


def test_fixture_matches_the_manual_pages_when_they_are_present():
    if not os.path.isdir(SPEC):
        pytest.skip("shared/spec is not beside this checkout")
    found = set()
    for name in ("smtp.8.postfix-2.4.txt", "smtp.8.postfix-2.6.txt"):
        with open(os.path.join(SPEC, name)) as handle:
            for line in handle:
                match = re.match(r"^ {7}([a-z][a-z0-9_]+)( \(|$)", line.rstrip("\n"))
                if match and "_" in match.group(1):
                    found.add(match.group(1))
    assert found == set(manpage_names())


def test_every_manpage_parameter_is_registered():
    missing = [name for name in manpage_names() if name not in registry.REGISTRY]
    assert missing == []
    assert len(manpage_names()) > 120


def test_every_smtp_parameter_has_an_lmtp_mirror():
    for name in registry.REGISTRY:
        if name.startswith("smtp_") and name not in ("smtp_always_send_ehlo", "smtp_never_send_ehlo",
                                                      "smtp_destination_concurrency_limit",
                                                      "smtp_destination_recipient_limit"):
            assert registry.protocol_name(name, "lmtp") in registry.REGISTRY, name


def test_mirror_names_and_defaults():
    assert registry.protocol_name("smtp_helo_name", "lmtp") == "lmtp_lhlo_name"
    assert registry.protocol_name("smtp_helo_name", "smtp") == "smtp_helo_name"
    assert registry.protocol_name("smtp_discard_ehlo_keywords", "lmtp") == "lmtp_discard_lhlo_keywords"
    assert registry.lookup("lmtp_connect_timeout").default == "0s"
    assert registry.lookup("lmtp_tls_key_file").default == "$lmtp_tls_cert_file"
    assert registry.lookup("lmtp_line_length_limit").mirror_of == "smtp_line_length_limit"


def test_every_default_parses_with_its_own_type(tmp_path):
    (tmp_path / "main.cf").write_text("")
    config = Config.load(str(tmp_path))
    assert config.validate() == []


@pytest.mark.parametrize("name, default", [
    ("smtp_line_length_limit", "990"),
    ("smtp_connect_timeout", "30s"),
    ("smtp_mx_session_limit", "2"),
    ("inet_protocols", "ipv4"),
    ("smtp_tls_fingerprint_digest", "sha256"),
    ("smtp_pix_workarounds", "disable_esmtp, delay_dotcrlf"),
    ("smtp_tls_scert_verifydepth", "9"),
    ("maximal_queue_lifetime", "5d"),
    ("service_throttle_time", "60s"),
])
def test_seed_defaults(name, default):
    assert registry.lookup(name).default == default


def test_tls_defaults_are_modern():
    for name in ("smtp_tls_protocols", "smtp_tls_mandatory_protocols"):
        excluded = registry.lookup(name).default
        for old in ("!SSLv2", "!SSLv3", "!TLSv1", "!TLSv1.1"):
            assert old in excluded
    for name in ("tls_export_cipherlist", "tls_low_cipherlist", "tls_medium_cipherlist", "tls_high_cipherlist"):
        ciphers = registry.lookup(name).default
        assert "!RC4" in ciphers and "!EXPORT" in ciphers and "+RC4" not in ciphers


def test_design_queue_and_master_parameters_exist():
    for name in ("queue_directory", "mail_owner", "myhostname", "relayhost", "default_transport",
                 "transport_maps", "minimal_backoff_time", "maximal_backoff_time",
                 "maximal_queue_lifetime", "bounce_queue_lifetime", "delay_warning_time",
                 "queue_run_delay", "default_destination_concurrency_limit",
                 "default_destination_recipient_limit", "service_throttle_time", "maillog_file",
                 "dns_resolver_addresses", "default_process_limit"):
        assert name in registry.REGISTRY, name


def test_every_parameter_is_documented_and_typed():
    for param in registry.REGISTRY.values():
        assert param.doc and len(param.doc) > 10, param.name
        assert param.type in types.BY_NAME.values()
