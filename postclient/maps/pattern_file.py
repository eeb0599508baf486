"""The rule grammar shared by regexp:FILE and pcre:FILE tables.

Exports:
    PatternTable        base class; subclasses say how to compile one pattern
    parse_replacement   result text -> parts and the highest ``$n`` it uses

A table is a list of rules tried in order on the whole lookup key (keys are
never case-folded: case sensitivity is a per-pattern flag):

    /pattern/flags result          the first matching rule gives the result
    !/pattern/flags result         ... or the first rule that does NOT match
    /pattern/flags!/pattern2/ res  regexp only: pattern matches, pattern2 not
    if /pattern/flags              rules up to the matching endif are tried
    endif                            only when the key matches (or, with
                                     "if !/pattern/", does not match)

Any character that is not a letter or digit may delimit a pattern; a
backslash protects the delimiter.  ``if`` and ``endif`` are case-insensitive
and nest.  In the result, ``$1``, ``${1}`` and ``$(1)`` insert what the
corresponding parenthesised group matched (nothing when it matched nothing),
and ``$$`` is a literal ``$``.  Lines, comments and continuation lines are
read as in every Postfix table (``source.logical_lines``).  The rules may
also be given inline, Postfix 3.7 style: ``regexp:{ {/a/ b}, {/c/ d} }``.

Postfix logs a warning and skips a broken rule, which silently changes what
the table does.  Here every such problem is a ConfigError naming the file
and line (for inline rules: the table spec and the rule number): an unknown
flag, a missing closing delimiter, a pattern Python cannot compile, ``$n``
beyond the pattern's groups, ``$n`` after a negated pattern, a non-numeric
``$name``, a missing result, text after ``if /pattern/`` or ``endif`` (the
usual sign of an indented rule that became part of the line above), an
``endif`` without ``if`` and an ``if`` without ``endif``.

A lookup that produces an empty result (``$1`` of an empty group) returns
"" from ``lookup``; ``TableList`` turns that into "not found" with a
warning, as Postfix treats empty results as an error.

Reads no configuration parameters.
"""

from postclient.config.errors import ConfigError

from .rule_table import ENDIF as _ENDIF
from .rule_table import IF as _IF
from .rule_table import MATCH as _MATCH
from .rule_table import RuleTable
from .source import SPACE



def _isalnum(char):
    return char.isascii() and char.isalnum()


def parse_replacement(text):
    """Split result text into literal strings and group numbers (mac_parse rules).

    Returns (parts, highest group number used).  Raises ValueError.
    """
    parts = []
    literal = []
    highest = 0
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char != "$":
            literal.append(char)
            i += 1
            continue
        if i + 1 < n and text[i + 1] == "$":
            literal.append("$")
            i += 2
            continue
        i += 1
        if i < n and text[i] in "({":
            opening = text[i]
            closing = ")" if opening == "(" else "}"
            level = 1
            j = i + 1
            while True:
                if j >= n:
                    raise ValueError(f"truncated macro reference: \"{text}\"")
                if text[j] == opening:
                    level += 1
                elif text[j] == closing:
                    level -= 1
                    if level == 0:
                        break
                j += 1
            name = text[i + 1:j]
            i = j + 1
        else:
            j = i
            while j < n and (_isalnum(text[j]) or text[j] == "_"):
                j += 1
            name = text[i:j]
            i = j
        if not name:
            raise ValueError(f"empty macro name in \"{text}\" (write $$ for a literal $)")
        if not (name.isascii() and name.isdigit()):
            digits = len(name) - len(name.lstrip("0123456789"))
            hint = (f"; write ${{{name[:digits]}}}{name[digits:]} when text follows $n"
                    if digits else "")
            raise ValueError(f"non-numeric replacement index \"{name}\" (expected $1..$99"
                             f"{hint})")
        number = int(name)
        if number < 1:
            raise ValueError(f"out of range replacement index \"{name}\"")
        if literal:
            parts.append("".join(literal))
            literal = []
        parts.append(number)
        highest = max(highest, number)
    if literal:
        parts.append("".join(literal))
    return parts, highest


class _Rule:
    __slots__ = ("op", "line", "match", "positive", "match2", "positive2",
                 "parts", "literal", "endif")

    def __init__(self, op, line):
        self.op = op
        self.line = line
        self.match = None
        self.positive = True
        self.match2 = None
        self.positive2 = True
        self.parts = None
        self.literal = None
        self.endif = None


class PatternTable(RuleTable):
    """Rules read from a file or an inline ``{ {rule}, ... }`` body."""

    second_pattern = False      # regexp allows /p1/!/p2/
    flag_stoppers = ""          # characters that end the flags besides whitespace

    # -- subclass hook ------------------------------------------------------
    def compile_pattern(self, pattern, flags, source, line):
        """Return (callable key -> match or None, number of groups)."""
        raise NotImplementedError

    # -- parsing ------------------------------------------------------------------
    def _parse_rule(self, text, source, number, open_ifs):
        if not _isalnum(text[0]):
            return self._parse_match(text, source, number)
        lowered = text[:6].lower()
        if lowered.startswith("if") and (len(text) == 2 or not _isalnum(text[2])):
            rule = _Rule(_IF, number)
            pattern, flags, rule.positive, pos = self._get_pattern(text, 2, source, number)
            rule.match, _ = self.compile_pattern(pattern, flags, source, number)
            extra = text[pos:].strip(SPACE)
            if extra:
                raise ConfigError(source, number, f"unexpected text after \"if\" pattern:"
                                  f" \"{extra}\" (lines between if and endif must not"
                                  f" start with whitespace)")
            return rule
        if lowered.startswith("endif") and (len(text) == 5 or not _isalnum(text[5])):
            if not open_ifs:
                raise ConfigError(source, number, "endif without matching if")
            extra = text[5:].strip(SPACE)
            if extra:
                raise ConfigError(source, number, f"unexpected text after endif: \"{extra}\"")
            return _Rule(_ENDIF, number)
        raise ConfigError(source, number, "unrecognized request (expected \"/pattern/ result\","
                          " \"if /pattern/\" or \"endif\")")

    def _parse_match(self, text, source, number):
        rule = _Rule(_MATCH, number)
        pattern, flags, rule.positive, pos = self._get_pattern(text, 0, source, number)
        rule.match, groups = self.compile_pattern(pattern, flags, source, number)
        if self.second_pattern and text.startswith("!", pos):
            pattern2, flags2, rule.positive2, pos = self._get_pattern(text, pos, source, number)
            rule.match2, _ = self.compile_pattern(pattern2, flags2, source, number)
        result = text[pos:].lstrip(SPACE)
        if not result:
            raise ConfigError(source, number, "missing result text after the pattern"
                              " (expected \"/pattern/ result\")")
        try:
            parts, highest = parse_replacement(result)
        except ValueError as exc:
            raise ConfigError(source, number, f"bad replacement syntax: {exc}") from None
        if highest and not rule.positive:
            raise ConfigError(source, number, "$number found in negative match replacement text")
        if highest > groups:
            raise ConfigError(source, number, f"out of range replacement index \"{highest}\""
                              f" (the pattern has {groups} group{'s' if groups != 1 else ''})")
        if highest:
            rule.parts = tuple(parts)
        else:
            rule.literal = "".join(parts)
        return rule

    def _get_pattern(self, text, pos, source, number):
        """Negations, delimiter, pattern, flags at pos -> (pattern, flags, positive, pos)."""
        n = len(text)
        positive = True
        while pos < n and (text[pos] == "!" or text[pos] in SPACE):
            if text[pos] == "!":
                positive = not positive
            pos += 1
        if pos >= n:
            raise ConfigError(source, number, "no pattern (expected /pattern/)")
        delimiter = text[pos]
        pos += 1
        start = pos
        while pos < n:
            char = text[pos]
            if char == "\\":
                pos += 1
            elif char == delimiter:
                break
            pos += 1
        if pos >= n:
            raise ConfigError(source, number, f"no closing regexp delimiter \"{delimiter}\"")
        pattern = text[start:pos]
        pos += 1
        flags_start = pos
        while pos < n and text[pos] not in SPACE and text[pos] not in self.flag_stoppers:
            pos += 1
        return pattern, text[flags_start:pos], positive, pos

    # -- lookup ------------------------------------------------------------------------
    def lookup(self, key):
        rules = self._rules
        index = 0
        count = len(rules)
        while index < count:
            rule = rules[index]
            op = rule.op
            if op == _MATCH:
                found = rule.match(key)
                if (found is not None) != rule.positive:
                    index += 1
                    continue
                if rule.match2 is not None and (rule.match2(key) is not None) != rule.positive2:
                    index += 1
                    continue
                if rule.literal is not None:
                    return rule.literal
                return "".join(part if part.__class__ is str else (found.group(part) or "")
                               for part in rule.parts)
            if op == _IF and (rule.match(key) is not None) != rule.positive:
                index = rule.endif + 1
                continue
            index += 1
        return None



