"""POSIX regular expressions (regexp_table(5)) translated into Python ``re``.

Exports:
    translate_posix   POSIX ERE or BRE text -> Python pattern text
    posix_flags       the ``re`` flags that go with it
    ASCII_CLASSES     ``[:name:]`` classes as Python set contents (ASCII only)

Postfix compiles regexp tables with regcomp(3): extended syntax (ERE) unless
the ``x`` flag turns it off (BRE), case-insensitive unless ``i`` turns it
off, and with REG_NEWLINE when ``m`` is given.  Python's ``re`` reads many
patterns differently, so the text is translated, never passed through:

- bracket expressions: ``[]a]``, ``[^]a]``, a backslash is literal inside,
  ``[:alpha:]`` and the other classes, ``[.x.]`` and ``[=x=]`` for one
  character; everything is re-emitted with Python escapes;
- a repetition of a repetition (``a**``, ``a+?``) repeats the group, as in
  POSIX, instead of becoming Python's lazy quantifier;
- ``$`` matches only at the very end (``\\Z``) unless ``m`` is given, and
  ``.`` and ``[^...]`` match a newline unless ``m`` is given;
- GNU escapes ``\\w \\W \\s \\S \\b \\B \\< \\> \\` \\'`` and back-references
  ``\\1``..``\\9`` are kept; ``\\<`` and ``\\>`` become look-arounds;
- any other backslash-letter (``\\d``, ``\\n``, ``\\t`` ...) is an error: glibc
  silently reads it as the plain letter, which is never what was meant;
- an interval that is not ``{n}``, ``{n,}``, ``{n,m}`` or ``{,m}``, or a
  repetition with nothing before it, is an error (as in glibc); an unmatched
  ``)`` is an ordinary character (as in glibc's ERE).

Matching is then done by Python: leftmost-first rather than POSIX's
leftmost-longest, which can change what a ``$n`` substitution captures
(never whether a rule matches); ``.`` matches one character, not one byte.

Reads no configuration parameters.
"""

import re

ASCII_CLASSES = {
    "alpha": "a-zA-Z",
    "digit": "0-9",
    "alnum": "0-9A-Za-z",
    "upper": "A-Z",
    "lower": "a-z",
    "space": "\\x20\\t\\n\\r\\f\\x0b",
    "blank": "\\x20\\t",
    "punct": "\\x21-\\x2f\\x3a-\\x40\\x5b-\\x60\\x7b-\\x7e",
    "print": "\\x20-\\x7e",
    "graph": "\\x21-\\x7e",
    "cntrl": "\\x00-\\x1f\\x7f",
    "xdigit": "0-9A-Fa-f",
}

_ERE_INTERVAL = re.compile(r"\{([0-9]*)(?:(,)([0-9]*))?\}")
_BRE_INTERVAL = re.compile(r"\\\{([0-9]*)(?:(,)([0-9]*))?\\\}")
_DUP_MAX = 0x7FFF  # glibc RE_DUP_MAX
_GNU_ESCAPES = {
    "w": ("\\w", True), "W": ("\\W", True), "s": ("\\s", True), "S": ("\\S", True),
    "b": ("\\b", False), "B": ("\\B", False),
    "<": ("\\b(?=\\w)", False), ">": ("\\b(?<=\\w)", False),
    "`": ("\\A", False), "'": ("\\Z", False),
}


def class_char(char):
    """One character as it may appear inside a Python character set."""
    if char.isascii() and char.isalnum():
        return char
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def posix_flags(icase, newline):
    flags = re.ASCII
    if icase:
        flags |= re.IGNORECASE
    flags |= re.MULTILINE if newline else re.DOTALL
    return flags


class _Frame:
    __slots__ = ("items", "atom", "quantified")

    def __init__(self):
        self.items = []
        self.atom = None        # index of the item a repetition would apply to
        self.quantified = False


class _Translator:
    def __init__(self, pattern, extended, newline):
        self.p = pattern
        self.n = len(pattern)
        self.extended = extended
        self.newline = newline
        self.stack = [_Frame()]

    # -- output helpers -------------------------------------------------
    @property
    def frame(self):
        return self.stack[-1]

    def atom(self, text):
        frame = self.frame
        frame.items.append(text)
        frame.atom = len(frame.items) - 1
        frame.quantified = False

    def operator(self, text):
        frame = self.frame
        frame.items.append(text)
        frame.atom = None

    def repeat(self, text):
        frame = self.frame
        if frame.atom is None:
            if not self.extended and text == "*":
                self.atom("\\*")   # BRE: a leading '*' is an ordinary character
                return
            raise ValueError("repetition operator without anything to repeat")
        if frame.quantified:
            frame.items[frame.atom] = "(?:" + frame.items[frame.atom] + ")" + text
        else:
            frame.items[frame.atom] += text
            frame.quantified = True

    def open_group(self):
        self.stack.append(_Frame())

    def close_group(self):
        frame = self.stack.pop()
        self.atom("(" + "".join(frame.items) + ")")

    def at_alternative_start(self):
        items = self.frame.items
        return not items or items[-1] == "|"

    # -- the scan ---------------------------------------------------------
    def run(self):
        i = 0
        p, n = self.p, self.n
        while i < n:
            c = p[i]
            if c == "\\":
                i = self.escape(i)
            elif c == "[":
                text, i = self.bracket(i)
                self.atom(text)
            elif c == ".":
                self.atom(".")
                i += 1
            elif c == "*":
                self.repeat("*")
                i += 1
            elif c == "^":
                if self.extended or self.at_alternative_start():
                    self.operator("^")
                else:
                    self.atom("\\^")
                i += 1
            elif c == "$":
                if self.extended or self.bre_dollar_is_anchor(i):
                    self.operator("$" if self.newline else "\\Z")
                else:
                    self.atom("\\$")
                i += 1
            elif self.extended and c in "+?":
                self.repeat(c)
                i += 1
            elif self.extended and c == "{":
                i = self.interval(i, _ERE_INTERVAL)
            elif self.extended and c == "(":
                self.open_group()
                i += 1
            elif self.extended and c == ")" and len(self.stack) > 1:
                self.close_group()
                i += 1
            elif self.extended and c == "|":
                self.operator("|")
                i += 1
            else:
                self.atom(re.escape(c))
                i += 1
        if len(self.stack) > 1:
            raise ValueError("unmatched ( or \\(")
        return "".join(self.frame.items)

    def bre_dollar_is_anchor(self, i):
        rest = self.p[i + 1:i + 3]
        return i + 1 == self.n or rest in ("\\)", "\\|")

    def escape(self, i):
        if i + 1 >= self.n:
            raise ValueError("trailing backslash")
        d = self.p[i + 1]
        if not self.extended:
            if d == "(":
                self.open_group()
                return i + 2
            if d == ")":
                if len(self.stack) == 1:
                    raise ValueError("unmatched ) or \\)")
                self.close_group()
                return i + 2
            if d == "{":
                return self.interval(i, _BRE_INTERVAL)
            if d == "|":
                self.operator("|")
                return i + 2
            if d in "+?":
                self.repeat(d)
                return i + 2
        if d in "123456789":
            self.atom(f"(?:\\{d})")
        elif d in _GNU_ESCAPES:
            text, is_atom = _GNU_ESCAPES[d]
            if is_atom:
                self.atom(text)
            else:
                self.operator(text)
        elif d.isascii() and d.isalnum():
            raise ValueError(f"unsupported escape \\{d} (POSIX regular expressions have"
                             f" no \\{d}; use a bracket expression or a pcre: table)")
        else:
            self.atom(re.escape(d))
        return i + 2

    def interval(self, i, syntax):
        match = syntax.match(self.p, i)
        if match is None:
            raise ValueError("invalid interval: expected {n}, {n,}, {n,m} or {,m}")
        low, comma, high = match.groups()
        low_n = int(low) if low else 0
        high_n = int(high) if high else None
        if (high_n is not None and high_n < low_n) or low_n > _DUP_MAX or (
                high_n is not None and high_n > _DUP_MAX):
            raise ValueError(f"invalid interval \"{match.group(0)}\"")
        if not comma:
            text = "{%d}" % low_n
        elif high_n is None:
            text = "{%d,}" % low_n
        else:
            text = "{%d,%d}" % (low_n, high_n)
        self.repeat(text)
        return match.end()

    def bracket(self, i):
        p, n = self.p, self.n
        i += 1
        negate = i < n and p[i] == "^"
        if negate:
            i += 1
        parts = []
        first = True
        while True:
            if i >= n:
                raise ValueError("unmatched [ (bracket expression not closed)")
            c = p[i]
            if c == "]" and not first:
                i += 1
                break
            first = False
            if c == "[" and i + 1 < n and p[i + 1] in ":=.":
                kind, name, i = self.bracket_term(i)
                if kind == ":":
                    parts.append(ASCII_CLASSES[name])
                    continue
                start = name
            else:
                start = c
                i += 1
            if i + 1 < n and p[i] == "-" and p[i + 1] != "]":
                i += 1
                if p[i] == "[" and i + 1 < n and p[i + 1] in ":=.":
                    kind, end, i = self.bracket_term(i)
                    if kind == ":":
                        raise ValueError("a character class cannot end a range")
                else:
                    end = p[i]
                    i += 1
                if ord(end) < ord(start):
                    raise ValueError(f"invalid range end in \"{start}-{end}\"")
                parts.append(class_char(start) + "-" + class_char(end))
            else:
                parts.append(class_char(start))
        if negate and self.newline:
            parts.append("\\n")  # REG_NEWLINE: [^...] never matches a newline
        return "[" + ("^" if negate else "") + "".join(parts) + "]", i

    def bracket_term(self, i):
        """``[:name:]``, ``[=c=]`` or ``[.c.]`` at i -> (kind, name, next index)."""
        kind = self.p[i + 1]
        end = self.p.find(kind + "]", i + 2)
        if end < 0:
            raise ValueError(f"unterminated [{kind} in bracket expression")
        name = self.p[i + 2:end]
        if kind == ":":
            if name not in ASCII_CLASSES:
                raise ValueError(f"unknown character class \"[:{name}:]\"")
        elif len(name) != 1:
            raise ValueError(f"unsupported collating element \"[{kind}{name}{kind}]\"")
        return kind, name, end + 2


def translate_posix(pattern, extended=True, newline=False):
    """Translate a POSIX pattern; raises ValueError saying what is wrong."""
    return _Translator(pattern, extended, newline).run()
