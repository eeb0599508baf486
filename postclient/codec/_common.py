"""What both DATA encoders share: options, limits, MimeError, MIME header parsing.

The compiled encoder (``pyx/_encode_c.pyx``) and its Python twin
(``_encode_py``) import everything here, so that option checking, the error
class and the rarely-run MIME header parsers are one piece of code, not two
that could drift apart.  Only the per-byte and per-line work is duplicated.

Exports:
  MimeError                  raised when MIME nesting exceeds mime_nesting_limit
                             (``.dsn == "5.6.0"``, like Postfix's bounce).
  check_options(...)         validates the keyword arguments of encode/Encoder.
  record_size(boundary_limit)
                             length of the pieces a long line is cut into
                             before the MIME parser sees it.
  HEADER_PARSE_LIMIT         bytes of a Content-Type or Content-Transfer-Encoding
                             header the parser reads (Postfix header_size_limit).
  header_kind(name)          which of the headers the downgrade cares about.
  parse_content_type(text, boundary_limit)
  parse_transfer_encoding(text)
  the CTYPE_*, STYPE_*, DOMAIN_* and HEADER_* codes used by both encoders.

Parameters it relates to: smtp_line_length_limit (line_length_limit),
mime_nesting_limit, mime_boundary_length_limit.  disable_mime_output_conversion
is the caller's business: it decides whether ``downgrade=True`` is passed.
"""

import operator

__all__ = [
    "MimeError", "check_options", "record_size", "HEADER_PARSE_LIMIT",
    "header_kind", "parse_content_type", "parse_transfer_encoding",
]

# Largest value accepted for any of the numeric limits; keeps every size the
# compiled code computes far away from Py_ssize_t overflow.
MAX_LIMIT = 1 << 30

# Postfix's header_size_limit default.  Text of one Content-Type or
# Content-Transfer-Encoding header beyond this is not looked at (it is still
# sent).  It also bounds the memory a held Content-Transfer-Encoding header uses.
HEADER_PARSE_LIMIT = 102400

# Lines longer than this are handed to the MIME parser in pieces (Postfix's
# REC_TYPE_CONT records), so that a 1 GB line needs no 1 GB buffer.  Only the
# first piece of a line can be a header or a boundary, hence the minimum.
MIN_RECORD_SIZE = 8192

# Content types, subtypes and encoding domains, with Postfix's meaning.
CTYPE_OTHER, CTYPE_TEXT, CTYPE_MESSAGE, CTYPE_MULTIPART = 0, 1, 2, 3
(STYPE_OTHER, STYPE_PLAIN, STYPE_RFC822, STYPE_PARTIAL,
 STYPE_EXTERNAL_BODY, STYPE_GLOBAL) = 0, 1, 2, 3, 4, 5
DOMAIN_7BIT, DOMAIN_8BIT, DOMAIN_BINARY = 7, 8, 9

# Header kinds the downgrade distinguishes.
HEADER_NONE, HEADER_OTHER, HEADER_CONTENT_TYPE, HEADER_TRANSFER_ENCODING = 0, 1, 2, 3


class MimeError(Exception):
    """The message's MIME structure is beyond what postclient will convert.

    ``dsn`` is the RFC 3463 status ("5.6.0", a permanent failure: the message
    is bounced, as Postfix does) and ``str(error)`` the text for the DSN.
    """

    dsn = "5.6.0"

    def __init__(self, text="MIME nesting exceeds safety limit"):
        super().__init__(text)
        self.text = text


def check_options(line_length_limit, downgrade, mime_nesting_limit,
                  mime_boundary_length_limit):
    """Return the options as (int, bool, int, int) or raise TypeError/ValueError.

    line_length_limit is 0 (no folding) or at least 2: with 1 a continuation
    line (a SPACE plus L-1 bytes) could never carry any content.
    """
    limit = operator.index(line_length_limit)
    nesting = operator.index(mime_nesting_limit)
    boundary = operator.index(mime_boundary_length_limit)
    if limit < 0 or limit == 1 or limit > MAX_LIMIT:
        raise ValueError(
            f"line_length_limit must be 0 or between 2 and {MAX_LIMIT}, not {limit}")
    if not 1 <= nesting <= MAX_LIMIT:
        raise ValueError(
            f"mime_nesting_limit must be between 1 and {MAX_LIMIT}, not {nesting}")
    if not 1 <= boundary <= MAX_LIMIT:
        raise ValueError(
            f"mime_boundary_length_limit must be between 1 and {MAX_LIMIT}, "
            f"not {boundary}")
    return limit, bool(downgrade), nesting, boundary


def record_size(boundary_limit):
    """Piece size for the MIME parser: a whole boundary line fits in one."""
    return max(MIN_RECORD_SIZE, boundary_limit + 4)


def header_kind(name):
    """HEADER_* code for a header name (bytes, without the colon)."""
    name = name.lower()
    if name == b"content-type":
        return HEADER_CONTENT_TYPE
    if name == b"content-transfer-encoding":
        return HEADER_TRANSFER_ENCODING
    return HEADER_OTHER


# RFC 2045 token syntax.  Comments and quoted strings are understood; CR, LF
# (continuation lines are joined with LF), SPACE and TAB separate tokens.
_TSPECIALS = frozenset(b'()<>@,;:\\"/[]?=')
_WHITESPACE = frozenset(b" \t\r\n")
_ATOM, _QUOTED, _SPECIAL = 0, 1, 2


def _tokens(text):
    """Yield (kind, value, start, end) for each RFC 2045 token of text."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in _WHITESPACE:
            i += 1
        elif c == 0x28:                          # "(" comment, may nest
            depth = 0
            while i < n:
                c = text[i]
                if c == 0x5C:                    # backslash quotes the next byte
                    i += 2
                    continue
                if c == 0x28:
                    depth += 1
                elif c == 0x29:
                    depth -= 1
                    if depth == 0:
                        i += 1
                        break
                i += 1
        elif c == 0x22:                          # quoted string
            start = i
            i += 1
            value = bytearray()
            while i < n and text[i] != 0x22:
                if text[i] == 0x5C and i + 1 < n:
                    i += 1
                value.append(text[i])
                i += 1
            i += 1
            yield _QUOTED, bytes(value), start, min(i, n)
        elif c in _TSPECIALS:
            yield _SPECIAL, c, i, i + 1
            i += 1
        else:
            start = i
            while i < n and text[i] not in _WHITESPACE and text[i] not in _TSPECIALS:
                i += 1
            yield _ATOM, text[start:i], start, i


def _header_value(text):
    """The header text after the colon that ends its name."""
    colon = text.find(b":")
    return text[colon + 1:] if colon >= 0 else b""


def _groups(value):
    """Tokens of a header value, split into lists at each ";"."""
    groups = [[]]
    for token in _tokens(value):
        if token[0] == _SPECIAL and token[1] == 0x3B:
            groups.append([])
        else:
            groups[-1].append(token)
    return groups


def _is_atom(token, word):
    return token[0] == _ATOM and token[1].lower() == word


_MESSAGE_SUBTYPES = {
    b"rfc822": STYPE_RFC822, b"partial": STYPE_PARTIAL,
    b"external-body": STYPE_EXTERNAL_BODY, b"global": STYPE_GLOBAL,
}


def parse_content_type(text, boundary_limit):
    """Parse a whole Content-Type header (name included, lines joined with LF).

    Returns (ctype, stype, part_ctype, part_stype, boundaries).  part_* is the
    default type of the parts of a multipart (message/rfc822 for
    multipart/digest, text/plain otherwise).  boundaries lists every non-empty
    boundary parameter of a multipart, each cut to boundary_limit bytes; an
    unquoted value runs to the next ";" (so that ``boundary=----=_Part_1``
    works as mail readers expect).  Anything unrecognised gives CTYPE_OTHER.
    """
    value = _header_value(text)
    groups = _groups(value)
    head = groups[0]
    ctype, stype = CTYPE_OTHER, STYPE_OTHER
    part_ctype, part_stype = CTYPE_TEXT, STYPE_PLAIN
    subtype = None
    if len(head) >= 3 and head[1][0] == _SPECIAL and head[1][1] == 0x2F \
            and head[2][0] == _ATOM:
        subtype = head[2][1].lower()
    if head and _is_atom(head[0], b"text"):
        ctype = CTYPE_TEXT
        stype = STYPE_PLAIN if subtype == b"plain" else STYPE_OTHER
    elif head and _is_atom(head[0], b"message"):
        ctype = CTYPE_MESSAGE
        stype = _MESSAGE_SUBTYPES.get(subtype, STYPE_OTHER)
    elif head and _is_atom(head[0], b"multipart"):
        ctype = CTYPE_MULTIPART
        if subtype == b"digest":
            part_ctype, part_stype = CTYPE_MESSAGE, STYPE_RFC822
    boundaries = []
    if ctype == CTYPE_MULTIPART:
        for group in groups[1:]:
            if len(group) < 3 or not _is_atom(group[0], b"boundary"):
                continue
            if group[1][0] != _SPECIAL or group[1][1] != 0x3D:
                continue
            kind, token_value, start, _ = group[2]
            if kind == _QUOTED:
                boundary = token_value
            elif kind == _ATOM:
                boundary = value[start:group[-1][3]]
            else:
                continue
            boundary = boundary[:boundary_limit]
            if boundary:
                boundaries.append(boundary)
    return ctype, stype, part_ctype, part_stype, boundaries


_DOMAINS = {
    b"7bit": DOMAIN_7BIT, b"8bit": DOMAIN_8BIT, b"binary": DOMAIN_BINARY,
    b"base64": DOMAIN_7BIT, b"quoted-printable": DOMAIN_7BIT,
}


def parse_transfer_encoding(text):
    """Encoding domain declared by a Content-Transfer-Encoding header, or None.

    None (an unknown or missing value) leaves the entity's domain as it was,
    as in Postfix.
    """
    for kind, token_value, _, _ in _tokens(_header_value(text)):
        if kind != _ATOM:
            return None
        return _DOMAINS.get(token_value.lower())
    return None
