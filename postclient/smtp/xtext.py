"""Encodings for SMTP command parameters: xtext, utf-8-addr-xtext, RFC 821 quoting.

Exports xtext(), uxtext(), quote_821_local(), quote_822_local() and
has_unsafe_characters().  Reads no parameters.

- xtext (RFC 3461) carries DSN ENVID and ORCPT values and XFORWARD attribute
  values: every byte that is "+", not printable ASCII, or in ``specials``
  becomes ``+XX`` (two upper-case hex digits), as Postfix's xtext_quote().
  Text is encoded to UTF-8 first (surrogate escapes give back raw bytes).
- utf-8-addr-xtext (RFC 6533) carries ``ORCPT=utf-8;...``: "\\", "+", "=",
  controls, space and non-ASCII characters become ``\\x{HEX}``.
- quote_821_local() quotes the local part of an envelope address when it is
  not an RFC 821 dot-string (smtp_quote_rfc821_envelope); quote_822_local()
  does the same by RFC 822 rules for the address inside ORCPT.  The domain is
  left alone.  Both are 8-bit clean, as Postfix's are by default.
"""

import functools
import re


def has_unsafe_characters(text):
    """True when ``text`` holds CR, LF or NUL, which must never reach the wire."""
    return "\r" in text or "\n" in text or "\0" in text


def xtext(text, specials=""):
    """RFC 3461 xtext encoding of ``text``; ``specials`` are encoded too."""
    if isinstance(text, str) and _plain_xtext(specials).fullmatch(text):
        return text                     # nothing to encode (the usual case)
    data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else bytes(text)
    special_bytes = specials.encode("ascii")
    out = []
    for byte in data:
        if byte != 0x2B and 32 < byte < 127 and byte not in special_bytes:
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)


def _plain_xtext(specials):
    """A pattern for text that xtext() leaves as it is, with these ``specials``."""
    pattern = _PLAIN_XTEXT.get(specials)
    if pattern is None:
        kept = "".join(re.escape(chr(b)) for b in range(33, 127)
                       if chr(b) != "+" and chr(b) not in specials)
        pattern = _PLAIN_XTEXT[specials] = re.compile(f"[{kept}]*")
    return pattern


_PLAIN_XTEXT = {}


def uxtext(text):
    """RFC 6533 utf-8-addr-xtext encoding of ``text``."""
    out = []
    for char in text:
        point = ord(char)
        if 32 < point < 127 and char not in "\\+=":
            out.append(char)
        else:
            out.append(f"\\x{{{point:X}}}")
    return "".join(out)


# A dot-string per Postfix's is_821_dot_string(): atoms without space, controls,
# DEL or any of <>()[]\,;:@" joined by single dots (none leading or trailing).
_ATOM = r'[^\x00-\x20\x7f<>()\[\]\\,;:@".]+'
_DOT_STRING = re.compile(f"{_ATOM}(?:\\.{_ATOM})*")


def _is_dot_string(local):
    return _DOT_STRING.fullmatch(local) is not None


def _quote_local(address, escaped):
    at = address.rfind("@")
    local, domain = (address, "") if at < 0 else (address[:at], address[at:])
    if _is_dot_string(local):
        return address
    quoted = "".join("\\" + c if c in escaped else c for c in local)
    return f'"{quoted}"{domain}'


@functools.lru_cache(maxsize=4096)
def quote_821_local(address):
    """``address`` with its local part quoted as RFC 821 requires, when needed.

    The null address stays empty.  The local part is everything before the
    last "@".  Results are kept: the same senders and recipients recur in a
    queue run.
    """
    if not address:
        return address
    return _quote_local(address, '"\\\r\n')


@functools.lru_cache(maxsize=4096)
def quote_822_local(address):
    """``address`` with its local part quoted by RFC 822 rules, when needed."""
    if not address:
        return address
    return _quote_local(address, '"\\\r')
