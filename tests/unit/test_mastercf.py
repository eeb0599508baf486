"""master.cf: eight columns, defaults, continuation lines, -o overrides, { } groups."""

import pytest

from postclient.config import mastercf
from postclient.config.config import Config
from postclient.config.errors import ConfigError

GOOD = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
smtp       unix  -       -       n       -       -       smtp
relay      unix  -       -       n       -       20      smtp
    -o smtp_helo_timeout=5s
    -o { smtp_fallback_relay = [a], [b] }
  # comment inside a continued entry
    -o smtp_connect_timeout=10s -v
qmgr       unix  n       -       n       300?    1       qmgr
"""


def parse(text):
    return mastercf.parse_master_cf(text, "master.cf")


def test_columns_defaults_and_overrides():
    services, warnings = parse(GOOD)
    assert warnings == []
    smtp, relay, qmgr = services
    assert (smtp.name, smtp.type, smtp.private, smtp.unprivileged, smtp.chroot) == ("smtp", "unix", True, True, False)
    assert smtp.maxproc is None and smtp.wakeup == 0
    assert relay.maxproc == 20 and relay.line == 3
    assert [(s.name, s.value) for s in relay.overrides] == [
        ("smtp_helo_timeout", "5s"), ("smtp_fallback_relay", "[a], [b]"), ("smtp_connect_timeout", "10s")]
    assert relay.arguments == ["-v"]
    assert qmgr.private is False and qmgr.wakeup == 300 and qmgr.wakeup_after_use
    assert qmgr.key == "qmgr/unix"


def test_maxproc_default_comes_from_main_cf(tmp_path):
    (tmp_path / "main.cf").write_text("default_process_limit = 7\n")
    config = Config.load(str(tmp_path))
    smtp, relay, _ = parse(GOOD)[0]
    assert smtp.process_limit(config) == 7
    assert relay.process_limit(config) == 20


def test_overrides_apply_to_one_service(tmp_path):
    (tmp_path / "main.cf").write_text("smtp_helo_timeout = 300s\n")
    config = Config.load(str(tmp_path))
    relay = parse(GOOD)[0][1]
    assert config.with_overrides(relay.overrides).get("smtp_helo_timeout") == 5
    assert config.get("smtp_helo_timeout") == 300


@pytest.mark.parametrize("line, message", [
    ("smtp unix - - n - -", r"master.cf:2: only 7 of 8 columns"),
    ("smtp tcp - - n - - smtp", r'master.cf:2: smtp: bad service type "tcp"'),
    ("smtp unix maybe - n - - smtp", r'master.cf:2: private column: bad value "maybe"'),
    ("smtp unix - - n soon - smtp", r'master.cf:2: smtp: wakeup column: bad value "soon"'),
    ("smtp unix - - n - many smtp", r'master.cf:2: smtp: maxproc column: bad value "many"'),
    ("smtp unix - - n - - smtp -o", r"master.cf:2: smtp: -o without a value"),
    ("smtp unix - - n - - smtp -o novalue", r'master.cf:2: missing "="'),
    ("smtp unix - - n - - smtp -o { a = b", r'master.cf:2: missing "}"'),
])
def test_errors_name_file_line_and_expectation(line, message):
    with pytest.raises(ConfigError, match=message):
        parse("# header\n" + line + "\n")


def test_duplicate_service():
    with pytest.raises(ConfigError, match=r"master.cf:3: duplicate service smtp/unix \(first defined at line 1\)"):
        parse("smtp unix - - n - - smtp\nlmtp unix - - n - - lmtp\nsmtp unix - - n - - smtp\n")


def test_unknown_override_warns():
    _services, warnings = parse("smtp unix - - n - - smtp -o no_such_parameter=1\n")
    assert "master.cf:1: smtp: -o no_such_parameter: unknown parameter" in str(warnings[0])


def test_format_round_trips():
    services, _ = parse(GOOD)
    text = "\n".join(mastercf.format_service(s) for s in services) + "\n"
    again, _ = parse(text)
    assert [(s.key, s.columns, s.command, s.arguments, s.overrides and [(o.name, o.value) for o in s.overrides])
            for s in again] == [(s.key, s.columns, s.command, s.arguments,
                                 s.overrides and [(o.name, o.value) for o in s.overrides]) for s in services]


def test_shipped_default_master_cf_parses():
    from importlib import resources
    text = resources.files("postclient.config").joinpath("defaults", "master.cf").read_text()
    services, warnings = parse(text)
    assert warnings == []
    assert {s.name for s in services} >= {"smtp", "lmtp", "scache"}
    # Only what exists: every command of the shipped master.cf is a known service.
    from postclient.server.registry import SERVICES
    assert {s.command for s in services} <= set(SERVICES)
