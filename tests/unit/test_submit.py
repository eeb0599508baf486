"""Submission helpers: address parsing and qualification, option values, input, headers."""

import io
import time

import pytest

from postclient.queue import submit
from postclient.queue.submit import Address, AddressError, SubmitError


# --- addresses ------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("user@example.com", [Address("user", "example.com")]),
    ("user", [Address("user", "")]),
    ("a@x.org, b@y.org", [Address("a", "x.org"), Address("b", "y.org")]),
    ("Al Smith <al@x.org>", [Address("al", "x.org")]),
    ('"Smith, Al" <al@x.org>, c@d', [Address("al", "x.org"), Address("c", "d")]),
    ("al@x.org (Al Smith)", [Address("al", "x.org")]),
    ("al(nested (comment))@x.org", [Address("al", "x.org")]),
    ('"john doe"@x.org', [Address("john doe", "x.org")]),
    ('"a\\"b"@x.org', [Address('a"b', "x.org")]),
    ("first.last@sub.x.org", [Address("first.last", "sub.x.org")]),
    ("user@[192.0.2.1]", [Address("user", "[192.0.2.1]")]),
    ("<@relay.example:user@x.org>", [Address("user", "x.org")]),
    ("team: a@x.org, b@x.org;, c@x.org",
     [Address("a", "x.org"), Address("b", "x.org"), Address("c", "x.org")]),
    ("undisclosed-recipients:;", []),
    ("", []),
    (" , ,", []),
    ("jürgen@bücher.example", [Address("jürgen", "bücher.example")]),
    ("a@x.org,\tb@x.org", [Address("a", "x.org"), Address("b", "x.org")]),
])
def test_parse_addresses(text, expected):
    assert submit.parse_addresses(text) == expected


@pytest.mark.parametrize("text, complaint", [
    ("<a@x.org", "unbalanced"),
    ("a@x.org>", "unbalanced"),
    ("<<a@x.org>>", "nested"),
    ('"a@x.org', "unterminated quoted string"),
    ("(comment a@x.org", "unbalanced ("),
    ("a)@x.org", "unbalanced"),
    ("john doe@x.org", "spaces"),
    ("John Doe", "spaces"),
    ("a@b@c", 'more than one "@"'),
    ("@x.org", "empty local part"),
    ("user@", "malformed domain"),
    ("user@x..org", "malformed domain"),
    ("user@.x.org", "malformed domain"),
    ("user@x org", "space inside the domain"),
    ("<a@x.org> junk", "after <address>"),
    ("a@x.org\r\nRCPT TO:<evil@x.org>", "CR, LF or NUL"),
    ("a@x.org\nb@y.org", "CR, LF or NUL"),
    ("a\0@x.org", "CR, LF or NUL"),
    ("a\x01@x.org", "control character"),
    ('"a\tb"@x.org', "control character"),
    ("<>", "empty address"),
    ("x" * 1001 + "@x.org", "longer than"),
    ("a@x.org;", "outside a group"),
])
def test_parse_addresses_refuses(text, complaint):
    with pytest.raises(AddressError, match=complaint.replace("(", r"\(").replace("+", r"\+")):
        submit.parse_addresses(text)


@pytest.mark.parametrize("text, expected", [
    ("", Address("", "")), ("<>", Address("", "")), ("me", Address("me", "")),
    ("Me <me@x.org>", Address("me", "x.org")),
])
def test_parse_sender(text, expected):
    assert submit.parse_sender(text) == expected


def test_parse_sender_refuses_two_addresses():
    with pytest.raises(AddressError, match="more than one sender"):
        submit.parse_sender("a@x.org, b@x.org")


def test_qualify_appends_myorigin_only_without_a_domain():
    assert submit.qualify(Address("bob", ""), "origin.example") == "bob@origin.example"
    assert submit.qualify(Address("bob", "x.org"), "origin.example") == "bob@x.org"
    assert submit.qualify(Address("", ""), "origin.example") == ""
    # a quoted "@" in an unqualified local part still gets the domain
    assert submit.qualify(submit.parse_addresses('"a@b"')[0], "o.example") == "a@b@o.example"


def test_dedupe_keeps_the_first_and_ignores_domain_case():
    kept = submit.dedupe([("a@X.org", "a@X.org"), ("a@x.org", "a"), ("A@x.org", "A@x.org")])
    assert kept == [("a@X.org", "a@X.org"), ("A@x.org", "A@x.org")]


# --- option values ----------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("never", "NEVER"), ("NEVER", "NEVER"), ("success", "SUCCESS"),
    ("delay, failure,success", "SUCCESS,FAILURE,DELAY"), ("failure,failure", "FAILURE"),
])
def test_notify_value(text, expected):
    assert submit.notify_value(text) == expected


@pytest.mark.parametrize("text", ["", "never,success", "sometimes", "success;delay"])
def test_notify_value_refuses(text):
    with pytest.raises(ValueError, match="bad -N value"):
        submit.notify_value(text)


def test_ret_encoding_and_envid_values():
    assert submit.ret_value("hdrs") == "HDRS" and submit.ret_value("Full") == "FULL"
    assert submit.encoding_value("8BITMIME") == "8bit" and submit.encoding_value("7bit") == "7bit"
    assert submit.envid_value("abc-123") == "abc-123"
    with pytest.raises(ValueError, match="expected full or hdrs"):
        submit.ret_value("some")
    with pytest.raises(ValueError, match="needs 8BITMIME or 7BIT"):
        submit.encoding_value("BINARYMIME")
    for bad in ("a\r\nb", "a b", "x" * 101, "é"):
        with pytest.raises(ValueError):
            submit.envid_value(bad)


# --- reading the input --------------------------------------------------------------------
def read(data, **options):
    return submit.read_message(io.BytesIO(data), **options)


def test_a_dot_line_ends_the_input_unless_told_otherwise():
    data = b"Subject: x\n\nline\n.\nafter\n"
    assert read(data) == b"Subject: x\n\nline\n"
    assert read(data, dot_ends=False) == data
    assert read(b"a\r\n.\r\nb\r\n") == b"a\r\n"
    assert read(b"a\n.") == b"a\n"


def test_dots_that_do_not_end_the_input():
    data = b"..\n. \n.x\nend.\n"
    assert read(data) == data


def test_a_dot_after_a_long_line_piece_is_not_a_line():
    long_line = b"x" * submit.READ_CHUNK + b".\n"    # the "." starts a read, not a line
    assert read(long_line) == long_line


def test_leading_mbox_from_lines_are_dropped():
    data = b"From someone Mon Jan  1 00:00:00 2024\n>From again\nSubject: x\n\nFrom here on\n"
    assert read(data) == b"Subject: x\n\nFrom here on\n"
    long_from = b"From " + b"y" * (2 * submit.READ_CHUNK) + b"\nSubject: y\n"
    assert read(long_from) == b"Subject: y\n"


def test_the_size_limit_stops_reading():
    assert read(b"x" * 100, limit=100) == b"x" * 100
    with pytest.raises(submit.MessageTooBig) as caught:
        read(b"x" * 101, limit=100)
    assert caught.value.status == 69 and str(caught.value) == "message file too big"


# --- headers ---------------------------------------------------------------------------------
def prepare(content, **overrides):
    values = dict(queue_id="QID1", uid=1000, myhostname="host.example", myorigin="origin.example",
                  mail_name="postclient", from_address="me@origin.example", full_name="",
                  now=1700000000)
    values.update(overrides)
    return submit.prepare_content(content, **values)


def header_lines(content):
    return content.split(b"\n\n", 1)[0].split(b"\n")


def test_missing_headers_are_added_and_received_comes_first():
    result = prepare(b"Subject: hello\n\nbody\n", full_name="Me Myself")
    lines = header_lines(result.content)
    assert lines[0] == b"Received: by host.example (postclient, from userid 1000)"
    assert lines[1].startswith(b"\tid QID1; ") and b"2023" in lines[1]
    assert lines[2] == b"Subject: hello"
    assert lines[3].startswith(b"Date: ") and b"Nov 2023" in lines[3]
    assert lines[4] == b"Message-ID: <QID1@host.example>"
    assert lines[5] == b"From: Me Myself <me@origin.example>"
    assert result.content.endswith(b"\n\nbody\n")
    assert (result.message_id_name, result.message_id) == ("message-id", "<QID1@host.example>")


def test_existing_headers_are_kept_and_not_duplicated():
    content = (b"From: Someone <s@x.org>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n"
               b"Message-ID: <own@x.org>\nSubject: s\n\nbody\n")
    result = prepare(content)
    assert result.content == header_lines(result.content)[0] + b"\n" + \
        header_lines(result.content)[1] + b"\n" + content
    assert result.message_id == "<own@x.org>"


def test_header_names_match_without_case():
    result = prepare(b"FROM: a@x.org\ndate: today\nmessage-id: <m@x>\n\nbody\n")
    assert result.content.count(b"From:") == 0 and result.content.count(b"FROM:") == 1
    assert result.message_id == "<m@x>"


def test_crlf_messages_get_crlf_headers():
    result = prepare(b"Subject: s\r\n\r\nbody\r\n")
    head, body = result.content.split(b"\r\n\r\n", 1)
    assert body == b"body\r\n"
    assert b"\n" not in head.replace(b"\r\n", b"")


def test_bcc_headers_are_removed_with_their_continuation_lines():
    content = b"To: a@x.org\nBcc: hidden@x.org,\n  other@x.org\nResent-Bcc: r@x.org\nSubject: s\n\nbody\n"
    result = prepare(content)
    assert b"hidden" not in result.content and b"other@" not in result.content
    assert b"r@x.org" not in result.content
    assert b"To: a@x.org\nSubject: s\n" in result.content


def test_a_body_without_headers_gets_a_separating_empty_line():
    result = prepare(b"just text, no header\nmore\n")
    assert b"\n\njust text, no header\nmore\n" in result.content
    # a first line starting with white space must not continue our headers
    result = prepare(b"  indented first line\n")
    assert result.content.endswith(b"\n\n  indented first line\n")


def test_an_empty_message_gets_headers_only():
    result = prepare(b"")
    assert result.content.startswith(b"Received: ") and result.content.endswith(b"\n")
    assert b"\n\n" not in result.content


def test_a_last_header_without_newline_is_terminated():
    result = prepare(b"Subject: no newline")
    assert b"Subject: no newline\nDate: " in result.content


def test_resent_messages_get_resent_headers():
    content = b"From: a@x.org\nDate: d\nMessage-ID: <m@x>\nResent-To: b@x.org\n\nbody\n"
    result = prepare(content)
    assert b"Resent-Date: " in result.content and b"Resent-From: me@origin.example" in result.content
    assert b"Resent-Message-ID: <QID1@host.example>" in result.content
    assert result.message_id_name == "resent-message-id"
    assert result.content.count(b"\nDate:") == 1


def test_extract_recipients_from_to_cc_and_bcc():
    content = (b"To: a@x.org, Bee <b@x.org>\nCc: c,\n  d@x.org\nBcc: e@x.org\n"
               b"Apparently-To: no@x.org\nSubject: s\n\nTo: body@x.org\n")
    result = prepare(content, extract=True)
    assert result.header_recipients == [("a@x.org", "a@x.org"), ("b@x.org", "b@x.org"),
                                        ("c@origin.example", "c"), ("d@x.org", "d@x.org"),
                                        ("e@x.org", "e@x.org")]
    assert b"e@x.org" not in result.content
    assert prepare(content).header_recipients == []


def test_resent_recipient_headers_win_with_extract():
    content = b"To: old@x.org\nResent-To: new@x.org\nResent-Cc: cc@x.org\n\nbody\n"
    assert prepare(content, extract=True).header_recipients == [
        ("new@x.org", "new@x.org"), ("cc@x.org", "cc@x.org")]


def test_a_malformed_header_address_is_a_data_error():
    with pytest.raises(SubmitError, match=r"malformed address in the To: header") as caught:
        prepare(b"To: <broken@x.org\n\nbody\n", extract=True)
    assert caught.value.status == 65
    prepare(b"To: <broken@x.org\n\nbody\n")      # not parsed without -t


def test_hopcount_limit_counts_our_received_header():
    two = b"Received: from a\nReceived: from b\n\nbody\n"
    prepare(two, hopcount_limit=4)
    with pytest.raises(SubmitError, match="too many hops") as caught:
        prepare(two, hopcount_limit=3)
    assert caught.value.status == 69


@pytest.mark.parametrize("name, expected", [
    ("Plain Name", "Plain Name <me@origin.example>"),
    ("Smith, John", '"Smith, John" <me@origin.example>'),
    ('Say "hi"', '"Say \\"hi\\"" <me@origin.example>'),
    ("Jürgen", "=?utf-8?q?J=C3=BCrgen?= <me@origin.example>"),
])
def test_from_header_display_names(name, expected):
    assert submit.from_header_value("me@origin.example", name) == expected


def test_from_header_quotes_an_unusual_local_part():
    assert submit.from_header_value("john doe@x.org", "") == '"john doe"@x.org'


def test_body_encoding_and_smtputf8():
    assert submit.body_encoding(b"plain ascii\n") == "7bit"
    assert submit.body_encoding(b"caf\xc3\xa9\n") == "8bit"
    assert submit.body_encoding(b"caf\xc3\xa9\n", "7bit") == "7bit"
    assert submit.body_encoding(b"ascii\n", "8bit") == "8bit"
    assert not submit.needs_smtputf8("a@x.org", ["b@x.org"])
    assert submit.needs_smtputf8("", ["jürgen@x.org"])
    assert submit.needs_smtputf8("ü@x.org", ["b@x.org"])


# --- the queue ---------------------------------------------------------------------------------
def queue_fields():
    return dict(sender="a@x.org", recipients=["b@y.org"], content=b"\n", arrival_time=1.0)


def test_enqueue_falls_back_to_maildrop_only_for_permission_errors(tmp_path, monkeypatch):
    (tmp_path / "maildrop").mkdir()
    with pytest.raises(SubmitError, match="queue file write error") as caught:
        submit.enqueue(str(tmp_path), "QID1", **queue_fields())     # no incoming/: not a permission error
    assert caught.value.status == 75 and not list((tmp_path / "maildrop").iterdir())
    (tmp_path / "incoming").mkdir()
    real = submit.queuefile.write_queue_file

    def refuse_incoming(directory, queue_id, **fields):
        if directory.endswith("incoming"):
            raise PermissionError(13, "Permission denied")
        return real(directory, queue_id, **fields)
    monkeypatch.setattr(submit.queuefile, "write_queue_file", refuse_incoming)
    path, queue = submit.enqueue(str(tmp_path), "QID2", **queue_fields())
    assert (queue, path) == ("maildrop", str(tmp_path / "maildrop" / "QID2"))


def test_an_unreadable_directory_is_made_durable_with_syncfs(tmp_path, monkeypatch):
    """maildrop/ is 1733: the directory fsync fails after the rename; syncfs replaces it."""
    (tmp_path / "incoming").mkdir()
    synced = []

    def unreadable(path):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(submit.queuefile, "fsync_directory", unreadable)
    monkeypatch.setattr(submit.queuefile, "_sync_filesystem", synced.append)
    path, queue = submit.enqueue(str(tmp_path), "QID3", **queue_fields())
    assert queue == "incoming" and synced == [path]
    assert submit.queuefile.read_queue_file(path).sender == "a@x.org"


def test_a_permission_error_before_the_rename_is_not_success(tmp_path, monkeypatch):
    (tmp_path / "incoming").mkdir()
    (tmp_path / "maildrop").mkdir()

    def refused(directory, queue_id, **fields):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(submit.queuefile, "write_queue_file", refused)
    with pytest.raises(SubmitError, match="cannot write") as caught:
        submit.enqueue(str(tmp_path), "QID4", **queue_fields())
    assert caught.value.status == 75


def test_sync_filesystem_runs_on_a_real_file(tmp_path):
    target = tmp_path / "file"
    target.write_bytes(b"x")
    submit.queuefile._sync_filesystem(str(target))


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "America/St_Johns", "Asia/Kolkata",
                                  "Pacific/Chatham", "America/Los_Angeles"])
def test_the_date_header_says_what_the_email_package_would(monkeypatch, zone):
    """rfc5322_date() replaced email.utils.format_datetime() (slow to import):
    the same text, negative and fractional-hour offsets and summer time included."""
    import datetime
    import email.utils
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        for moment in (0, 1e9, 1700000000.5, 1711846800, 1729990800, time.time()):
            expected = email.utils.format_datetime(datetime.datetime.fromtimestamp(moment).astimezone())
            assert submit.rfc5322_date(moment) == expected
    finally:
        monkeypatch.undo()
        time.tzset()
