"""Output rewriting: smtp_generic_maps, header/body checks with Postfix's restricted actions."""

import logging

import pytest

from postclient.config.config import Config
from postclient.maps import postmap
from postclient.smtp.content import ContentFilter

MESSAGE = (b"From: Alice <alice@internal.example>\r\n"
           b"To: bob@internal.example, \"Carol, C.\" <carol@other.example>\r\n"
           b"Cc: undisclosed:;\r\n"
           b"Subject: secret plans\r\n"
           b"X-Folded: one\r\n\ttwo\r\n"
           b"MIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=\"BOUND\"\r\n"
           b"\r\n"
           b"preamble\r\n"
           b"--BOUND\r\n"
           b"Content-Type: text/plain\r\n"
           b"\r\n"
           b"body line with password inside\r\n"
           b"caf\xc3\xa9 \xff raw bytes\r\n"
           b"--BOUND\r\n"
           b"Content-Type: message/rfc822\r\n"
           b"\r\n"
           b"Subject: inner\r\n"
           b"From: inner@internal.example\r\n"
           b"\r\n"
           b"inner body\r\n"
           b"--BOUND--\r\n")


def make(tmp_path, **params):
    lines = []
    for name, value in params.items():
        lines.append(f"{name} = {value}")
    (tmp_path / "main.cf").write_text("\n".join(lines) + "\n")
    return ContentFilter(Config.load(str(tmp_path)), "smtp", queue_id="QID1")


def test_inactive_filter_returns_the_same_object(tmp_path):
    content_filter = make(tmp_path)
    assert content_filter.filter(MESSAGE) is MESSAGE
    assert content_filter.rewrite_address("a@b") == "a@b"


def test_generic_maps_rewrite_envelope_and_primary_address_headers(tmp_path):
    generic = tmp_path / "generic"
    generic.write_text("alice@internal.example  alice@public.example\n@internal.example  @public.example\n")
    assert postmap.main([f"hash:{generic}"]) == 0
    content_filter = make(tmp_path, smtp_generic_maps=f"hash:{generic}")
    assert content_filter.rewrite_address("alice@internal.example") == "alice@public.example"
    assert content_filter.rewrite_address("bob@Internal.Example") == "bob@public.example"
    assert content_filter.rewrite_address("x@elsewhere.example") == "x@elsewhere.example"
    assert content_filter.rewrite_address("") == ""
    out = content_filter.filter(MESSAGE)
    assert b"From: Alice <alice@public.example>\r\n" in out
    assert b"To: bob@public.example, \"Carol, C.\" <carol@other.example>\r\n" in out
    assert b"Cc: undisclosed:;\r\n" in out
    # nested message headers are not primary headers: left alone
    assert b"From: inner@internal.example\r\n" in out
    assert b"caf\xc3\xa9 \xff raw bytes\r\n" in out


def test_header_checks_actions(tmp_path, caplog):
    checks = tmp_path / "header_checks"
    checks.write_text("/^Subject: secret/  REPLACE Subject: [redacted]\n"
                      "/^X-Folded: one\\n\\ttwo/  PREPEND X-Seen: folded\n"
                      "/^To:/  WARN has recipients\n"
                      "/^Cc:/  IGNORE\n"
                      "/^From:/  REJECT not allowed here\n")
    content_filter = make(tmp_path, smtp_header_checks=f"pcre:{checks}")
    with caplog.at_level(logging.INFO, logger="postclient"):
        out = content_filter.filter(MESSAGE)
    assert b"Subject: [redacted]\r\n" in out and b"secret plans" not in out
    assert b"X-Seen: folded\r\nX-Folded: one\r\n\ttwo\r\n" in out
    assert b"Cc:" not in out
    assert b"From: Alice <alice@internal.example>\r\n" in out   # unsupported action keeps the line
    assert b"Subject: inner\r\n" in out                          # nested headers use nested checks
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("QID1: replace: header Subject: secret plans: Subject: [redacted]") for m in messages)
    assert any(m.startswith("QID1: warning: header To: bob@internal.example") for m in messages)
    assert any("unsupported header_checks action REJECT" in m for m in messages)


def test_mime_nested_and_body_checks(tmp_path):
    (tmp_path / "mime").write_text("/^Content-Type: text\\/plain/  REPLACE Content-Type: text/plain; charset=utf-8\n")
    (tmp_path / "nested").write_text("/^Subject: inner/  STRIP\n")
    (tmp_path / "body").write_text("/password/  REPLACE [line removed]\n/^preamble$/  IGNORE\n")
    content_filter = make(tmp_path, smtp_mime_header_checks=f"regexp:{tmp_path}/mime",
                          smtp_nested_header_checks=f"regexp:{tmp_path}/nested",
                          smtp_body_checks=f"regexp:{tmp_path}/body")
    out = content_filter.filter(MESSAGE)
    assert b"Content-Type: text/plain; charset=utf-8\r\n" in out
    assert b"Subject: inner" not in out
    assert b"Subject: secret plans\r\n" in out
    assert b"[line removed]\r\n" in out and b"password" not in out
    assert b"preamble" not in out
    assert out.endswith(b"inner body\r\n--BOUND--\r\n")


def test_body_checks_do_not_see_headers(tmp_path):
    (tmp_path / "body").write_text("/^Subject/  REPLACE nope\n")
    content_filter = make(tmp_path, smtp_body_checks=f"regexp:{tmp_path}/body")
    out = content_filter.filter(MESSAGE)
    assert out.count(b"Subject:") == 2


@pytest.mark.parametrize("header", [
    b"To: <broken@internal.example\r\n",
    b"To: \"unterminated@internal.example\r\n",
    b"To: (comment only\r\n",
])
def test_malformed_address_headers_never_raise(tmp_path, header):
    generic = tmp_path / "generic"
    generic.write_text("@internal.example  @public.example\n")
    postmap.main([f"hash:{generic}"])
    content_filter = make(tmp_path, smtp_generic_maps=f"hash:{generic}")
    out = content_filter.filter(header + b"\r\nbody\r\n")
    assert out.endswith(b"\r\nbody\r\n")
