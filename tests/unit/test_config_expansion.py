"""main.cf syntax and $name expansion, with Postfix's rules."""

import pytest

from postclient.config.config import Config
from postclient.config.errors import ConfigError


def load(tmp_path, text, overrides=()):
    (tmp_path / "main.cf").write_text(text)
    return Config.load(str(tmp_path), overrides)


def test_comments_blank_lines_and_continuations(tmp_path):
    config = load(tmp_path, "# comment\n\nrelayhost =\n  [relay.example]\n\t:587\n   # indented comment\n"
                            "myorigin=example.org\n")
    assert config.raw("relayhost") == "[relay.example] :587"
    assert config.raw("myorigin") == "example.org"
    assert config.settings["myorigin"].line == 7


def test_last_setting_wins_with_a_warning(tmp_path):
    config = load(tmp_path, "relayhost = a\nrelayhost = b\n")
    assert config.raw("relayhost") == "b"
    assert any("overriding earlier entry at line 1" in str(w) for w in config.warnings)


@pytest.mark.parametrize("text, expected", [
    ("a = x\nb = $a\n", "x"),
    ("a = x\nb = ${a}\n", "x"),
    ("a = x\nb = $(a)\n", "x"),
    ("a = x\nb = pre-${a}-post\n", "pre-x-post"),
    ("a = x\nb = ${a?set}\n", "set"),
    ("a =\nb = ${a?set}\n", ""),
    ("a = x\nb = ${a:empty}\n", ""),
    ("a =\nb = ${a:empty}\n", "empty"),
    ("b = ${undefined_thing:fallback}\n", "fallback"),
    ("a = x\nc = y\nb = ${a?${c}!}\n", "y!"),
    ("b = cost $$5\n", "cost $5"),
    ("b = trailing $\n", "trailing $"),
    ("b = $undefined_name\n", ""),
])
def test_expansion_forms(tmp_path, text, expected):
    config = load(tmp_path, text)
    assert config.expand("b") == expected


def test_expansion_is_evaluated_when_used_so_later_settings_count(tmp_path):
    config = load(tmp_path, "smtp_helo_name = $myhostname\nmyhostname = mx.example.org\n")
    assert config.get("smtp_helo_name") == "mx.example.org"
    assert config.get("lmtp_lhlo_name") == "mx.example.org"


def test_override_beats_main_cf_and_takes_part_in_expansion(tmp_path):
    config = load(tmp_path, "myhostname = a.example\n", ["myhostname=b.example"])
    assert config.get("smtp_helo_name") == "b.example"


def test_defaults_refer_to_other_parameters(tmp_path):
    config = load(tmp_path, "smtp_tls_cert_file = /etc/cert.pem\nfallback_relay = [backup]\n")
    assert config.get("smtp_tls_key_file") == "/etc/cert.pem"
    assert config.get("smtp_fallback_relay") == ["[backup]"]


def test_direct_recursion_is_reported_with_file_and_line(tmp_path):
    config = load(tmp_path, "# x\nrelayhost = $relayhost\n")
    with pytest.raises(ConfigError) as caught:
        config.get("relayhost")
    message = str(caught.value)
    assert "main.cf:2:" in message
    assert "recursive expansion: relayhost -> relayhost" in message


def test_indirect_recursion_names_the_chain(tmp_path):
    config = load(tmp_path, "a = ${b:x}\nb = $c\nc = ${a?y}\nrelayhost = $a\n")
    with pytest.raises(ConfigError) as caught:
        config.expand("relayhost")
    assert "relayhost -> a -> b -> c -> a" in str(caught.value)
    assert "main.cf:4:" in str(caught.value)


def test_unbalanced_brace_is_an_error(tmp_path):
    config = load(tmp_path, "relayhost = ${myhostname\n")
    with pytest.raises(ConfigError, match=r'main.cf:1: relayhost: missing "}"'):
        config.expand("relayhost")


def test_bad_operator_in_macro_is_an_error(tmp_path):
    config = load(tmp_path, "relayhost = ${myhostname!x}\n")
    with pytest.raises(ConfigError, match=r"main.cf:1: relayhost: bad macro"):
        config.expand("relayhost")


def test_missing_equals_names_file_and_line(tmp_path):
    with pytest.raises(ConfigError, match=r"main.cf:3: missing \"=\""):
        load(tmp_path, "a = 1\n\njust words here\n")


def test_leading_whitespace_without_previous_line_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"main.cf:2: line starts with whitespace"):
        load(tmp_path, "# first\n   orphan = 1\n")


def test_bad_parameter_name(tmp_path):
    with pytest.raises(ConfigError, match=r'main.cf:1: bad parameter name "two words"'):
        load(tmp_path, "two words = 1\n")


def test_missing_main_cf_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"main.cf: cannot read"):
        Config.load(str(tmp_path / "nowhere"))


def test_unknown_parameters_warn_unless_referenced(tmp_path):
    config = load(tmp_path, "my_relay = [x]\nrelayhost = $my_relay\nspelling_mistke = 1\n")
    warnings = [str(w) for w in config.warnings]
    assert any("main.cf:3:" in w and "unknown parameter: spelling_mistke=1" in w for w in warnings)
    assert not any("my_relay" in w for w in warnings)


def test_dynamic_defaults(tmp_path):
    config = load(tmp_path, "myhostname = mail.example.org\n")
    assert config.get("mydomain") == "example.org"
    assert config.get("config_directory") == str(tmp_path)
    assert config.get("myorigin") == "mail.example.org"
