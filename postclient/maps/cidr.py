"""``cidr:FILE``: Postfix cidr_table(5), network blocks matched in order.

Exports:
    CidrTable     ``CidrTable(spec, path_or_inline_rules)``
    parse_network ``"192.0.2.0/24"`` -> (family, network, mask); ValueError

Rules, tried in order on the lookup key (an IP address):

    network/prefix  result      the key is inside the block
    address         result      the key is this address (a /32 or /128)
    !pattern        result      the key is NOT inside the block (Postfix 3.2)
    if pattern  /  if !pattern  the rules up to the matching endif apply
    endif                         only when the key matches (or does not)

IPv4 is dotted-quad; IPv6 any inet_pton(3) form; a pattern may be written
in brackets (``[2001:db8::]/32`` or ``[2001:db8::/32]``).  Keys and patterns
are compared as binary addresses, so ``0:0::1`` equals ``::1``.  A rule only
ever applies to keys of its own address family: ``!10.0.0.0/8`` does not
match an IPv6 key, and ``if`` blocks of the other family are skipped.  A key
that is not an IP address (or an address in brackets, or with a zone) is not
found; it is not an error.

Errors (ConfigError with file and line): a bad address, a prefix that is not
a number or too long for the family, host bits set below the prefix
(``non-null host address bits in "10.1.2.3/8", perhaps you should use
"10.0.0.0/8" instead``), a missing result, text after ``if``/``endif``, and
unbalanced ``if``/``endif``.  Postfix only warns and skips such rules.  Rules
may also be inline, Postfix 3.7 style: ``cidr:{ {10.0.0.0/8 ok}, {::/0 no} }``.

Reads no configuration parameters.
"""

import ipaddress
import socket

from postclient.config.errors import ConfigError

from .rule_table import ENDIF as _ENDIF
from .rule_table import IF as _IF
from .rule_table import MATCH as _MATCH
from .rule_table import RuleTable
from .source import SPACE

_BITS = {socket.AF_INET: 32, socket.AF_INET6: 128}


def _family(text):
    return socket.AF_INET6 if ":" in text else socket.AF_INET


def _address_int(family, text):
    return int.from_bytes(socket.inet_pton(family, text), "big")


def _format(family, value):
    if family == socket.AF_INET:
        return str(ipaddress.IPv4Address(value))
    return str(ipaddress.IPv6Address(value))


def parse_network(pattern):
    """Parse ``addr``, ``addr/len``, ``[addr]/len`` or ``[addr/len]``.

    Returns (family, network as int, mask as int).  Raises ValueError with
    Postfix's wording.
    """
    if not pattern:
        raise ValueError("no address pattern")
    text = pattern
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError(f"missing ']' character after \"{text}\"")
        inner, after = text[1:close], text[close + 1:]
        if after and not after.startswith("/"):
            raise ValueError(f"garbage after \"{text[:close + 1]}\"")
        text = inner + after
    address, slash, prefix = text.partition("/")
    family = _family(address)
    bits = _BITS[family]
    if slash:
        if not (prefix.isascii() and prefix.isdigit()):
            raise ValueError(f"bad mask value in \"{address}/{prefix}\"")
        length = int(prefix)
        if length > bits:
            raise ValueError(f"bad mask length in \"{address}/{prefix}\"")
        try:
            network = _address_int(family, address)
        except OSError:
            raise ValueError(f"bad network value in \"{address}/{prefix}\"") from None
        mask = ((1 << bits) - 1) ^ ((1 << (bits - length)) - 1)
        if network & ~mask:
            raise ValueError(f"non-null host address bits in \"{address}/{prefix}\","
                             f" perhaps you should use \"{_format(family, network & mask)}"
                             f"/{length}\" instead")
        return family, network, mask
    try:
        network = _address_int(family, address)
    except OSError:
        raise ValueError(f"bad address pattern: \"{address}\"") from None
    return family, network, (1 << bits) - 1


class _Rule:
    __slots__ = ("op", "line", "family", "network", "mask", "positive", "value", "endif")

    def __init__(self, op, line):
        self.op = op
        self.line = line
        self.family = None
        self.network = self.mask = 0
        self.positive = True
        self.value = None
        self.endif = None


def _negations(text):
    positive = True
    index = 0
    while index < len(text) and text[index] == "!":
        positive = not positive
        index += 1
    return positive, text[index:]


def _split_word(text):
    """(first whitespace-delimited word, the rest trimmed)."""
    index = 0
    while index < len(text) and text[index] not in SPACE:
        index += 1
    return text[:index], text[index:].strip(SPACE)


def _isalnum(char):
    return char.isascii() and char.isalnum()


class CidrTable(RuleTable):
    kind = "cidr"

    def _parse_rule(self, text, source, number, open_ifs):
        lowered = text[:6].lower()
        if lowered.startswith("if") and (len(text) == 2 or not _isalnum(text[2])):
            rule = _Rule(_IF, number)
            pattern, extra = _split_word(text[2:].lstrip(SPACE))
            if not pattern:
                raise ConfigError(source, number, "no address pattern after \"if\"")
            if extra:
                raise ConfigError(source, number, f"unexpected text after \"if\" pattern:"
                                  f" \"{extra}\" (lines between if and endif must not"
                                  f" start with whitespace)")
            self._set_pattern(rule, pattern, source, number)
            return rule
        if lowered.startswith("endif") and (len(text) == 5 or not _isalnum(text[5])):
            if not open_ifs:
                raise ConfigError(source, number, "endif without matching if")
            extra = text[5:].strip(SPACE)
            if extra:
                raise ConfigError(source, number, f"unexpected text after endif: \"{extra}\"")
            return _Rule(_ENDIF, number)
        rule = _Rule(_MATCH, number)
        pattern, value = _split_word(text)
        if not value:
            raise ConfigError(source, number, f"no lookup result after \"{pattern}\""
                              f" (expected \"network/prefix result\")")
        self._set_pattern(rule, pattern, source, number)
        rule.value = value
        return rule

    @staticmethod
    def _set_pattern(rule, pattern, source, number):
        rule.positive, pattern = _negations(pattern)
        try:
            rule.family, rule.network, rule.mask = parse_network(pattern)
        except ValueError as exc:
            raise ConfigError(source, number, str(exc)) from None

    def lookup(self, key):
        family = _family(key)
        try:
            address = _address_int(family, key)
        except (OSError, ValueError):
            return None
        rules = self._rules
        index = 0
        count = len(rules)
        while index < count:
            rule = rules[index]
            op = rule.op
            if op == _MATCH:
                if rule.family == family and \
                        ((address & rule.mask) == rule.network) == rule.positive:
                    return rule.value
            elif op == _IF:
                if rule.family != family or \
                        ((address & rule.mask) == rule.network) != rule.positive:
                    index = rule.endif + 1
                    continue
            index += 1
        return None

