"""What a server says about itself: greeting heuristics and EHLO keywords.

Exports Capabilities, GreetingInfo, parse_greeting(), parse_ehlo(),
discard_set() and DISCARDABLE.  Reads no parameters: the caller passes the
effective values of myhostname, smtp_discard_ehlo_keywords (or the result of
smtp_discard_ehlo_keyword_address_maps for this server) and
smtp_sasl_auth_enable.

Greeting (postfix-behaviour.md §1.2): the reply text, lines joined by
newlines and code included, made only of "2", "0", space, "*" and tab marks a
PIX firewall ("220 ********"); "ESMTP" as a word after the first one marks
ESMTP; a first word equal to myhostname is worth a warning.

EHLO (§1.3): on each reply line the keyword is the first token after the code
(split on space, tab or "=", so the old "AUTH=LOGIN" form works), matched
without regard to case.  The first line's first word is the server's name.
Recognised: 8BITMIME, PIPELINING, XFORWARD (with its attribute names), SIZE
(a non-numeric limit is warned about and ignored; 0 or none means no known
limit), STARTTLS, AUTH (only with SASL enabled; the mechanism lists of every
AUTH line are merged), DSN and SMTPUTF8 (which implies 8BITMIME).  A keyword
in the discard list is ignored; "silent-discard" in that list suppresses the
notice that says so.
"""

import dataclasses
import re

# Postfix's ehlo_mask table, in its order (used for the "discarding" notice).
DISCARDABLE = ("8BITMIME", "AUTH", "ETRN", "PIPELINING", "SIZE", "VERP", "VRFY", "XCLIENT",
               "XFORWARD", "STARTTLS", "ENHANCEDSTATUSCODES", "DSN", "SMTPUTF8", "CHUNKING")
SILENT_DISCARD = "SILENT-DISCARD"
XFORWARD_ATTRIBUTES = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE")


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """The features of one session, as learned from the greeting and EHLO/LHLO.

    ``esmtp`` is False for a HELO session (then every feature is off).
    ``size_limit`` is 0 when unknown.  ``auth`` holds the offered SASL
    mechanisms (empty unless SASL is enabled and the server offered some).
    ``xforward`` holds the announced XFORWARD attribute names.  ``pix_*``
    are the PIX workarounds in force for this server.  ``to_dict`` and
    ``from_dict`` carry the whole record across the connection cache.
    """

    esmtp: bool = False
    server_name: str = ""
    pipelining: bool = False
    eightbitmime: bool = False
    dsn: bool = False
    smtputf8: bool = False
    starttls: bool = False
    size: bool = False
    size_limit: int = 0
    auth: tuple = ()
    xforward: frozenset = frozenset()
    pix_disable_esmtp: bool = False
    pix_delay_dotcrlf: bool = False

    def to_dict(self):
        # A shallow copy: asdict() deep-copies, and this runs for every cached session.
        data = {field.name: getattr(self, field.name) for field in _FIELDS}
        data["auth"] = list(self.auth)
        data["xforward"] = sorted(self.xforward)
        return data

    @classmethod
    def from_dict(cls, data):
        # A reused session brings an equal dict again and again: the last result
        # is kept with its own to_dict() (private lists, never changed) and shared,
        # as a Capabilities never changes.
        last_data, last = _last_from_dict
        if type(last) is cls and data == last_data:
            return last
        values = {k: v for k, v in data.items() if k in _CAPABILITY_FIELDS}
        values["auth"] = tuple(values.get("auth", ()))
        values["xforward"] = frozenset(values.get("xforward", ()))
        capabilities = cls(**values)
        _remember_from_dict(capabilities.to_dict(), capabilities)
        return capabilities


# Field names, in order, for to_dict()/from_dict() (run for every reused session).
_FIELDS = dataclasses.fields(Capabilities)
_CAPABILITY_FIELDS = frozenset(field.name for field in _FIELDS)
_last_from_dict = (None, None)      # (to_dict() of the last from_dict() result, that result)


def _remember_from_dict(data, capabilities):
    global _last_from_dict
    _last_from_dict = (data, capabilities)


@dataclasses.dataclass(frozen=True)
class GreetingInfo:
    pix: bool
    esmtp: bool
    greeted_with_my_name: bool


def _class(delimiters):
    pattern = _CLASSES.get(delimiters)
    if pattern is None:
        pattern = _CLASSES[delimiters] = re.compile("[" + re.escape(delimiters) + "]+")
    return pattern


_CLASSES = {}


def _tokens(text, delimiters):
    """Postfix's mystrtok(): the non-empty tokens of ``text`` split on any delimiter."""
    return [t for t in _class(delimiters).split(text) if t]


def _split_first(text, delimiters):
    """(first token, rest after it) with leading delimiters skipped, or (None, "")."""
    text = text.lstrip(delimiters)
    if not text:
        return None, ""
    match = _class(delimiters).search(text)
    if match is None:
        return text, ""
    return text[:match.start()], text[match.start() + 1:]


def parse_greeting(reply, myhostname):
    """PIX, ESMTP and own-name findings for a 2xx greeting Reply."""
    joined = "\n".join(reply.lines)
    pix = all(c in "20 *\t\n" for c in joined)
    _first, rest = _split_first(joined, "- \t\n")
    esmtp = mine = False
    for n, word in enumerate(_tokens(rest, " \t\n")):
        if n == 0 and word.lower() == myhostname.lower():
            mine = True
        elif word.upper() == "ESMTP":
            esmtp = True
    return GreetingInfo(pix, esmtp, mine)


def discard_set(words):
    """The upper-cased keywords to ignore, from smtp_discard_ehlo_keywords-style words."""
    if isinstance(words, str):
        words = words.replace(",", " ").split()
    return frozenset(w.upper() for w in words if w)


def discard_notice(discard):
    """The "discarding EHLO keywords: ..." text, or None (nothing, or silent-discard)."""
    if SILENT_DISCARD in discard:
        return None
    known = [k for k in DISCARDABLE if k in discard]
    return f"discarding EHLO keywords: {' '.join(known)}" if known else None


def _is_reply_line(line):
    return len(line) >= 3 and line[:3].isdigit() and (len(line) == 3 or line[3] in " -")


def parse_ehlo(reply, discard=frozenset(), sasl_enabled=False, pix=None):
    """Capabilities from a 2xx EHLO/LHLO Reply, plus warnings as a list of str.

    ``pix`` is an earlier Capabilities whose pix_* flags are carried over.
    """
    warnings = []
    found = dict(esmtp=True, server_name="", pipelining=False, eightbitmime=False, dsn=False,
                 smtputf8=False, starttls=False, size=False, size_limit=0)
    auth = []
    xforward = set()
    n = 0
    for line in reply.lines:
        if not _is_reply_line(line):
            continue            # garbage gossip carries no capabilities
        code, rest = _split_first(line, "- ")
        if code is None:
            continue
        keyword, words = _split_first(rest, " \t=")
        if keyword is None:
            continue
        if n == 0:
            found["server_name"] = keyword
            n += 1
            continue
        n += 1
        key = keyword.upper()
        if key in discard:
            continue
        if key == "8BITMIME":
            found["eightbitmime"] = True
        elif key == "PIPELINING":
            found["pipelining"] = True
        elif key == "XFORWARD":
            xforward.update(w.upper() for w in _tokens(words, " \t")
                            if w.upper() in XFORWARD_ATTRIBUTES)
        elif key == "SIZE":
            found["size"] = True
            limit, _rest = _split_first(words, " \t")
            if limit is not None:
                if limit.isascii() and limit.isdigit():
                    found["size_limit"] = int(limit)
                else:
                    warnings.append(f'bad EHLO SIZE limit "{limit}"')
        elif key == "STARTTLS":
            found["starttls"] = True
        elif key == "AUTH" and sasl_enabled:
            mechanisms = list(_tokens(words, " \t"))
            if not mechanisms:
                warnings.append("offered null AUTH mechanism list")
            auth.extend(m.upper() for m in mechanisms if m.upper() not in auth)
        elif key == "DSN":
            found["dsn"] = True
        elif key == "SMTPUTF8":
            found["smtputf8"] = True
    if found["smtputf8"]:
        found["eightbitmime"] = True
    caps = Capabilities(**found, auth=tuple(auth), xforward=frozenset(xforward),
                        pix_disable_esmtp=bool(pix and pix.pix_disable_esmtp),
                        pix_delay_dotcrlf=bool(pix and pix.pix_delay_dotcrlf))
    return caps, warnings
