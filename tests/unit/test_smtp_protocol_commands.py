"""Command lines, parameter encodings and EHLO parsing of the protocol core (pure)."""

import pytest

from postclient.smtp.commands import (Envelope, Rcpt, UnsafeValueError, check_envelope,
                                      mail_command, mime_downgrade, notify_value, rcpt_command,
                                      unsafe_values, xforward_commands)
from postclient.smtp.ehlo import (Capabilities, discard_notice, discard_set, parse_ehlo,
                                  parse_greeting)
from postclient.smtp.events import LocalProtocolError
from postclient.smtp.reply import Reply
from postclient.smtp.xtext import quote_821_local, quote_822_local, uxtext, xtext

FULL = Capabilities(esmtp=True, pipelining=True, eightbitmime=True, dsn=True, size=True,
                    smtputf8=True, xforward=frozenset({"NAME", "ADDR", "PORT", "PROTO", "HELO",
                                                       "IDENT", "SOURCE"}))
BARE = Capabilities(esmtp=True)
HELO_ONLY = Capabilities()


# --- xtext and quoting --------------------------------------------------------------

@pytest.mark.parametrize("text, specials, encoded", [
    ("abc", "", "abc"),
    ("a+b", "", "a+2Bb"),
    ("a=b", "+=", "a+3Db"),
    ("a=b", "", "a=b"),
    ("sp ace", "", "sp+20ace"),
    ("caf\u00e9", "", "caf+C3+A9"),
    ("tab\there", "", "tab+09here"),
    ("~!", "", "~!"),
    ("\x7f", "", "+7F"),
])
def test_xtext(text, specials, encoded):
    assert xtext(text, specials) == encoded


def test_uxtext_encodes_specials_and_non_ascii_as_code_points():
    assert uxtext("j\u00f6rg+x=y\\z@b.example") == "j\\x{F6}rg\\x{2B}x\\x{3D}y\\x{5C}z@b.example"


@pytest.mark.parametrize("address, quoted", [
    ("user@example.com", "user@example.com"),
    ("first.last@example.com", "first.last@example.com"),
    ("john doe@example.com", '"john doe"@example.com'),
    ("a..b@example.com", '"a..b"@example.com'),
    (".a@example.com", '".a"@example.com'),
    ("a.@example.com", '"a."@example.com'),
    ('a"b@example.com', '"a\\"b"@example.com'),
    ("a\\b@example.com", '"a\\\\b"@example.com'),
    ("a@b@example.com", '"a@b"@example.com'),    # the local part ends at the last "@"
    ("<x>@example.com", '"<x>"@example.com'),
    ("@example.com", '""@example.com'),
    ("postmaster", "postmaster"),
    ("j\u00f6rg@example.com", "j\u00f6rg@example.com"),   # 8-bit clean
    ("", ""),
])
def test_rfc821_quoting_of_the_local_part(address, quoted):
    assert quote_821_local(address) == quoted


def test_rfc822_quoting_of_the_original_recipient():
    assert quote_822_local("john doe@example.com") == '"john doe"@example.com'
    assert quote_822_local("plain@example.com") == "plain@example.com"


# --- MAIL FROM ----------------------------------------------------------------------

def envelope(**kw):
    values = dict(sender="sender@example.org", recipients=[Rcpt("rcpt@example.com")], size=1234,
                  encoding="8bit")
    values.update(kw)
    return Envelope(**values)


def test_mail_from_has_no_space_after_the_colon_and_parameters_in_postfix_order():
    env = envelope(envid="id+1=2", ret="hdrs", smtputf8=True)
    line, warning = mail_command(env, FULL)
    assert line == ("MAIL FROM:<sender@example.org> SIZE=1234 BODY=8BITMIME ENVID=id+2B1+3D2 "
                    "RET=HDRS SMTPUTF8")
    assert warning is None


def test_mail_from_parameters_need_the_matching_capability():
    env = envelope(envid="x", ret="FULL", smtputf8=True)
    assert mail_command(env, BARE)[0] == "MAIL FROM:<sender@example.org>"
    assert mail_command(env, HELO_ONLY)[0] == "MAIL FROM:<sender@example.org>"


@pytest.mark.parametrize("encoding, body", [("8bit", " BODY=8BITMIME"), ("7bit", " BODY=7BIT"),
                                            ("", ""), ("unknown", ""), ("8BIT", " BODY=8BITMIME")])
def test_body_parameter_follows_the_known_encoding(encoding, body):
    caps = Capabilities(esmtp=True, eightbitmime=True)
    assert mail_command(envelope(encoding=encoding), caps)[0] == \
        "MAIL FROM:<sender@example.org>" + body


def test_unknown_encoding_is_warned_about_and_left_out():
    line, warning = mail_command(envelope(encoding="binary"), Capabilities(eightbitmime=True))
    assert line == "MAIL FROM:<sender@example.org>"
    assert warning == "unknown content encoding: binary"


def test_size_is_left_out_when_the_body_will_be_downgraded():
    caps = Capabilities(esmtp=True, size=True)          # no 8BITMIME
    env = envelope(encoding="8bit")
    assert mime_downgrade(env.encoding, caps)
    assert mail_command(env, caps, downgrade=True)[0] == "MAIL FROM:<sender@example.org>"
    assert mail_command(env, caps, downgrade=False)[0] == \
        "MAIL FROM:<sender@example.org> SIZE=1234"


@pytest.mark.parametrize("encoding, eightbit, disabled, expected", [
    ("8bit", False, False, True), ("", False, False, True), ("unknown", False, False, True),
    ("7bit", False, False, False), ("8bit", True, False, False), ("8bit", False, True, False),
])
def test_mime_downgrade_rule(encoding, eightbit, disabled, expected):
    caps = Capabilities(esmtp=True, eightbitmime=eightbit)
    assert mime_downgrade(encoding, caps, disabled) is expected


def test_null_sender_stays_empty_and_addresses_are_quoted():
    assert mail_command(envelope(sender=""), BARE)[0] == "MAIL FROM:<>"
    assert mail_command(envelope(sender="a b@x.example"), BARE)[0] == 'MAIL FROM:<"a b"@x.example>'
    assert mail_command(envelope(sender="a b@x.example"), BARE, quote=False)[0] == \
        "MAIL FROM:<a b@x.example>"


# --- RCPT TO ------------------------------------------------------------------------

def test_rcpt_dsn_parameters_only_with_dsn():
    rcpt = Rcpt("joe@example.com", orcpt="rfc822;Joe+x@example.com", notify="SUCCESS,FAILURE")
    assert rcpt_command(rcpt, FULL) == \
        "RCPT TO:<joe@example.com> ORCPT=rfc822;Joe+2Bx@example.com NOTIFY=SUCCESS,FAILURE"
    assert rcpt_command(rcpt, BARE) == "RCPT TO:<joe@example.com>"


def test_orcpt_from_the_original_address_when_none_was_given():
    rcpt = Rcpt("joe@example.com", original="john doe@example.com")
    assert rcpt_command(rcpt, FULL) == \
        'RCPT TO:<joe@example.com> ORCPT=rfc822;"john+20doe"@example.com'


def test_orcpt_of_other_types():
    assert rcpt_command(Rcpt("j@x", orcpt="utf-8;j\u00f6@x"), FULL) == \
        "RCPT TO:<j@x> ORCPT=utf-8;j\\x{F6}@x"
    assert rcpt_command(Rcpt("j@x", orcpt="x-odd;v=1"), FULL) == "RCPT TO:<j@x> ORCPT=x-odd;v+3D1"


@pytest.mark.parametrize("notify, value", [
    ("", ""), ("NEVER", "NEVER"), ("delay,success", "SUCCESS,DELAY"),
    (("FAILURE", "SUCCESS"), "SUCCESS,FAILURE"),
    ("SUCCESS, FAILURE, DELAY", "SUCCESS,FAILURE,DELAY"),
])
def test_notify_values_are_normalised(notify, value):
    assert notify_value(notify) == value


def test_request_recipient_objects_fit_too():
    class Recipient:              # the shape of postclient.smtp.request.Recipient
        address = "r@example.com"
        original = ""
        orcpt = ""
        notify = "NEVER"
    assert rcpt_command(Recipient(), FULL) == "RCPT TO:<r@example.com> NOTIFY=NEVER"


# --- XFORWARD -----------------------------------------------------------------------

def test_xforward_sends_announced_available_attributes_in_two_commands():
    attributes = {"NAME": "client.example.net", "ADDR": "192.0.2.7", "PORT": "4711",
                  "PROTO": "ESMTP", "HELO": "helo name", "IDENT": "ABC123", "SOURCE": "remote"}
    assert xforward_commands(attributes, FULL) == [
        "XFORWARD NAME=client.example.net ADDR=192.0.2.7 PORT=4711",
        "XFORWARD PROTO=ESMTP HELO=helo+20name IDENT=ABC123 SOURCE=REMOTE",
    ]


def test_xforward_leaves_out_unavailable_unknown_and_unannounced_attributes():
    caps = Capabilities(esmtp=True, xforward=frozenset({"NAME", "ADDR", "HELO", "SOURCE"}))
    attributes = {"name": "unknown", "ADDR": "[UNAVAILABLE]", "HELO": "unknown", "PROTO": "SMTP",
                  "SOURCE": "local"}
    assert xforward_commands(attributes, caps) == ["XFORWARD HELO=unknown SOURCE=LOCAL"]
    assert xforward_commands({"NAME": ""}, caps) == []
    assert xforward_commands({}, caps) == []
    assert xforward_commands({"NAME": "x"}, BARE) == []


# --- security rule 10 ---------------------------------------------------------------

@pytest.mark.parametrize("field, env", [
    ("sender", envelope(sender="a@b\r\nRCPT TO:<victim@x>")),
    ("recipient", envelope(recipients=[Rcpt("ok@x"), Rcpt("bad\n@x")])),
    ("recipient", envelope(recipients=[Rcpt("nul\0@x")])),
    ("orcpt", envelope(recipients=[Rcpt("ok@x", orcpt="rfc822;a\r@x")])),
    ("orcpt", envelope(recipients=[Rcpt("ok@x", original="a\n@x")])),
    ("notify", envelope(recipients=[Rcpt("ok@x", notify="SUCCESS\r\n")])),
    ("envid", envelope(envid="id\r\nQUIT")),
    ("ret", envelope(ret="FULL\n")),
])
def test_cr_lf_nul_are_refused(field, env):
    problems = unsafe_values(env)
    assert [p.field for p in problems] == [field]
    with pytest.raises(UnsafeValueError) as caught:
        check_envelope(env)
    assert caught.value.field == field
    assert isinstance(caught.value, LocalProtocolError)


def test_unsafe_values_name_the_recipient_and_a_status():
    env = envelope(recipients=[Rcpt("ok@x"), Rcpt("bad\r@x"), Rcpt("also\n@x")])
    problems = unsafe_values(env, helo_name="me\r\n")
    assert [(p.field, p.index, p.dsn) for p in problems] == [
        ("helo_name", None, "4.3.5"), ("recipient", 1, "5.1.3"), ("recipient", 2, "5.1.3")]
    assert unsafe_values(envelope()) == []


def test_bad_ret_value_is_refused():
    with pytest.raises(ValueError):
        check_envelope(envelope(ret="ALL"))


# --- greeting and EHLO --------------------------------------------------------------

@pytest.mark.parametrize("text, pix, esmtp, mine", [
    ("220 mx.example.com ESMTP Postfix", False, True, False),
    ("220 mx.example.com Microsoft SMTP ready", False, False, False),
    ("220 ********************************", True, False, False),
    ("220 ****** 2002 *** 0 ***", True, False, False),
    ("220-*****\n220 ****", False, False, False),     # the "-" is not a PIX character
    ("220 relay.example.org esmtp ready", False, True, True),
    ("220-relay.example.org\n220 ESMTP", False, True, True),
    ("220 ESMTP", False, True, False),                # as Postfix: any word but our own name
    ("220 relay.example.org", False, False, True),
])
def test_greeting_heuristics(text, pix, esmtp, mine):
    info = parse_greeting(Reply.make(text), "relay.example.org")
    assert (info.pix, info.esmtp, info.greeted_with_my_name) == (pix, esmtp, mine)


EHLO_TEXT = "\n".join([
    "250-mx.example.com Hello there",
    "250-pipelining",
    "250-SIZE 52428800",
    "250-8BITMIME",
    "250-AUTH=LOGIN",
    "250-AUTH PLAIN LOGIN CRAM-MD5",
    "250-XFORWARD NAME ADDR PROTO HELO bogus",
    "250-STARTTLS",
    "250-ENHANCEDSTATUSCODES",
    "250 DSN",
])


def test_ehlo_keywords_are_parsed_case_insensitively():
    caps, warnings = parse_ehlo(Reply.make(EHLO_TEXT), sasl_enabled=True)
    assert warnings == []
    assert caps.server_name == "mx.example.com"
    assert (caps.esmtp, caps.pipelining, caps.eightbitmime, caps.dsn, caps.starttls, caps.size) \
        == (True, True, True, True, True, True)
    assert caps.size_limit == 52428800
    assert caps.auth == ("LOGIN", "PLAIN", "CRAM-MD5")
    assert caps.xforward == frozenset({"NAME", "ADDR", "PROTO", "HELO"})
    assert not caps.smtputf8


def test_auth_is_ignored_without_sasl():
    caps, _ = parse_ehlo(Reply.make(EHLO_TEXT))
    assert caps.auth == ()


@pytest.mark.parametrize("line, size, limit, warned", [
    ("250 SIZE", True, 0, False), ("250 SIZE 0", True, 0, False),
    ("250 SIZE 1000", True, 1000, False), ("250 SIZE big", True, 0, True),
    ("250 SIZE=2000", True, 2000, False),
])
def test_size_keyword(line, size, limit, warned):
    caps, warnings = parse_ehlo(Reply.make("250-mx\n" + line))
    assert (caps.size, caps.size_limit, bool(warnings)) == (size, limit, warned)


def test_smtputf8_implies_8bitmime():
    caps, _ = parse_ehlo(Reply.make("250-mx\n250 SMTPUTF8"))
    assert caps.smtputf8 and caps.eightbitmime


def test_discarded_keywords_are_ignored():
    discard = discard_set(["pipelining", "Starttls", "auth", "silent-discard"])
    caps, _ = parse_ehlo(Reply.make(EHLO_TEXT), discard, sasl_enabled=True)
    assert not caps.pipelining and not caps.starttls and caps.auth == ()
    assert caps.eightbitmime and caps.dsn
    assert discard_notice(discard) is None
    assert discard_notice(discard_set("dsn, pipelining, nonsense")) == \
        "discarding EHLO keywords: PIPELINING DSN"
    assert discard_notice(discard_set("")) is None


def test_garbage_lines_carry_no_capabilities():
    reply = Reply.from_lines(["hello PIPELINING", "250-mx", "250 DSN"], garbage=True)
    caps, _ = parse_ehlo(reply)
    assert caps.server_name == "mx" and caps.dsn and not caps.pipelining


def test_capabilities_survive_the_connection_cache():
    caps, _ = parse_ehlo(Reply.make(EHLO_TEXT), sasl_enabled=True)
    assert Capabilities.from_dict(caps.to_dict()) == caps
