"""PCRE patterns (pcre_table(5)) translated into Python ``re``.

Exports:
    translate_pcre   PCRE pattern text -> Python pattern text
    pcre_flags       the ``re`` flags for pcre_table(5)'s i, m, s, x options

Python's ``re`` is close to PCRE but not the same.  Constructs that exist in
both with the same meaning pass through.  Constructs that Python spells
differently, or reads silently differently, are rewritten:

- ``\\Q...\\E`` quoting; ``\\x{hh..}``, ``\\o{..}``, ``\\e``, ``\\cX``;
- ``\\h \\H \\v \\V \\R \\N`` (Python's ``\\v`` is only VT; PCRE's is all vertical
  space);
- ``\\z`` -> ``\\Z``; PCRE's ``\\Z`` (end, or before a final newline) ->
  ``(?=\\n?\\Z)``;
- ``(?<name>...)``, ``(?'name'...)``, ``\\k<name>``, ``\\k{name}``, ``\\g{name}``
  -> Python's ``(?P<name>...)`` / ``(?P=name)``; ``\\g{N}``, ``\\g{-N}`` ->
  numbered back-references;
- POSIX classes inside sets (``[[:alpha:][:digit:]_]``, ``[[:^space:]]``
  alone), ASCII-only as in PCRE without UCP;
- option settings in the middle of a pattern (``a(?i)b|c``), which Python
  3.11 refuses, become scoped groups with PCRE's reach (rest of the group,
  including later alternatives);
- the ``U`` (ungreedy) table flag swaps greedy and lazy quantifiers, and the
  ``E`` flag makes ``$`` match only at the very end;
- ``{`` that does not start ``{n}``, ``{n,}`` or ``{n,m}`` is a literal brace,
  as in PCRE (Python would read ``{,n}`` as a repetition).

What Python lacks is an error when the table is opened, never a silent
difference: recursion and subroutine calls (``(?R)``, ``(?1)``, ``(?&n)``),
``(?|...)``, backtracking verbs ``(*...)``, ``\\G``, ``\\K``, ``\\X``, ``\\C``,
``\\p{..}``, callouts, and the ``n``, ``J``, ``U`` inline options.

Reads no configuration parameters.
"""

import re

from .posix_regex import ASCII_CLASSES, class_char

_QUANTIFIER = re.compile(r"\{[0-9]+(?:,[0-9]*)?\}")
_PCRE_CLASSES = dict(ASCII_CLASSES, word="0-9A-Za-z_")
_HSPACE = "\\t\\x20\\xa0"
_VSPACE = "\\n\\x0b\\x0c\\r\\x85"
_SET_ESCAPES = {"h": _HSPACE, "v": _VSPACE}
_ESCAPES = {
    "h": "[" + _HSPACE + "]", "H": "[^" + _HSPACE + "]",
    "v": "[" + _VSPACE + "]", "V": "[^" + _VSPACE + "]",
    "R": "(?:\\r\\n|[" + _VSPACE + "])",
    "z": "\\Z", "Z": "(?=\\n?\\Z)", "e": "\\x1b",
}
_UNSUPPORTED_ESCAPES = {
    "G": "\\G (start of match)", "K": "\\K (reset match start)", "X": "\\X (grapheme)",
    "C": "\\C (single code unit)", "p": "\\p{...} (Unicode property)",
    "P": "\\P{...} (Unicode property)",
}
_PY_INLINE_FLAGS = set("imsx-")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FLAG_GROUP = re.compile(r"\(\?([A-Za-z^-]*)([:)])")
_G_REFERENCE = re.compile(r"\\g(?:\{(-?[0-9]+|[A-Za-z_][A-Za-z0-9_]*)\}|(-?[0-9]+))")
_K_REFERENCE = re.compile(r"\\k(?:<([^>]*)>|'([^']*)'|\{([^}]*)\})")


def pcre_flags(caseless, multiline, dotall, extended):
    flags = re.ASCII
    if caseless:
        flags |= re.IGNORECASE
    if multiline:
        flags |= re.MULTILINE
    if dotall:
        flags |= re.DOTALL
    if extended:
        flags |= re.VERBOSE
    return flags


class _Frame:
    __slots__ = ("wrappers", "verbose", "multiline")

    def __init__(self, verbose, multiline):
        self.wrappers = []      # option settings opened in this group, as "(?i:"
        self.verbose = verbose
        self.multiline = multiline


class _Translator:
    def __init__(self, pattern, extended, multiline, ungreedy, dollar_endonly):
        self.p = pattern
        self.n = len(pattern)
        self.out = []
        self.ungreedy = ungreedy
        self.dollar_endonly = dollar_endonly
        self.groups = 0
        self.stack = [_Frame(extended, multiline)]

    def run(self):
        i = 0
        p, n, out = self.p, self.n, self.out
        while i < n:
            c = p[i]
            frame = self.stack[-1]
            if frame.verbose and c == "#":
                end = p.find("\n", i)
                end = n if end < 0 else end + 1
                out.append(p[i:end])
                i = end
            elif c == "\\":
                i = self.escape(i)
            elif c == "[":
                i = self.char_set(i)
            elif c == "(":
                i = self.open_group(i)
            elif c == ")":
                if len(self.stack) > 1:
                    out.append(")" * len(frame.wrappers))
                    self.stack.pop()
                out.append(")")
                i += 1
            elif c == "|":
                closers = ")" * len(frame.wrappers)
                out.append(closers + "|" + "".join(frame.wrappers))
                i += 1
            elif c in "*+?":
                out.append(c)
                i = self.modifier(i + 1)
            elif c == "{":
                match = _QUANTIFIER.match(p, i)
                if match:
                    out.append(match.group(0))
                    i = self.modifier(match.end())
                else:
                    out.append("\\{")
                    i += 1
            elif c == "$" and self.dollar_endonly and not frame.multiline:
                out.append("\\Z")
                i += 1
            else:
                out.append(c)
                i += 1
        for frame in reversed(self.stack):
            out.append(")" * len(frame.wrappers))
        return "".join(out)

    def modifier(self, i):
        """After a quantifier: apply U (ungreedy), copy a '?' or '+' modifier."""
        following = self.p[i] if i < self.n else ""
        if following == "+":
            self.out.append("+")
            return i + 1
        if self.ungreedy:
            if following == "?":
                return i + 1           # lazy under U means greedy
            self.out.append("?")
            return i
        if following == "?":
            self.out.append("?")
            return i + 1
        return i

    # -- escapes ----------------------------------------------------------
    def escape(self, i):
        p, n = self.p, self.n
        if i + 1 >= n:
            raise ValueError("trailing backslash")
        d = p[i + 1]
        if d == "Q":
            end = p.find("\\E", i + 2)
            literal = p[i + 2:] if end < 0 else p[i + 2:end]
            self.out.append("".join(_literal(ch) for ch in literal))
            return n if end < 0 else end + 2
        if d == "E":
            return i + 2
        if d in _ESCAPES:
            self.out.append(_ESCAPES[d])
            return i + 2
        if d == "N":
            if i + 2 < n and p[i + 2] == "{":
                raise ValueError("\\N{...} is not supported")
            self.out.append("[^\\n]")
            return i + 2
        if d in ("x", "o") and i + 2 < n and p[i + 2] == "{":
            char, i = _braced_code(p, i)
            self.out.append(_literal(char))
            return i
        if d == "c":
            if i + 2 >= n:
                raise ValueError("\\c at end of pattern")
            self.out.append(_literal(chr(ord(p[i + 2].upper()) ^ 0x40)))
            return i + 3
        if d == "g":
            return self.back_reference(i)
        if d == "k":
            return self.named_reference(i)
        if d in _UNSUPPORTED_ESCAPES:
            raise ValueError(f"{_UNSUPPORTED_ESCAPES[d]} is not supported by Python re")
        self.out.append(p[i:i + 2])
        return i + 2

    def back_reference(self, i):
        p = self.p
        match = _G_REFERENCE.match(p, i)
        if match is None:
            raise ValueError("\\g<...> subroutine calls are not supported by Python re")
        ref = match.group(1) or match.group(2)
        if ref.lstrip("-").isdigit():
            number = int(ref)
            if number < 0:
                number = self.groups + number + 1
            if number <= 0:
                raise ValueError(f"bad back-reference \\g{{{ref}}}")
            self.out.append(f"(?:\\{number})")
        else:
            self.out.append(f"(?P={ref})")
        return match.end()

    def named_reference(self, i):
        match = _K_REFERENCE.match(self.p, i)
        if match is None:
            raise ValueError("\\k must be followed by <name>, 'name' or {name}")
        name = match.group(1) or match.group(2) or match.group(3) or ""
        self.out.append(f"(?P={name})")
        return match.end()

    # -- sets ---------------------------------------------------------------
    def char_set(self, i):
        p, n = self.p, self.n
        start = i
        i += 1
        negate = i < n and p[i] == "^"
        if negate:
            i += 1
        parts = []
        negated_classes = []
        first = True
        while True:
            if i >= n:
                raise ValueError("missing terminating ] for character class")
            c = p[i]
            if c == "]" and not first:
                i += 1
                break
            first = False
            if c == "[" and i + 1 < n and p[i + 1] == ":":
                end = p.find(":]", i + 2)
                if end >= 0:
                    name = p[i + 2:end]
                    negated = name.startswith("^")
                    name = name.lstrip("^")
                    if name not in _PCRE_CLASSES:
                        raise ValueError(f"unknown POSIX class name \"{name}\"")
                    (negated_classes if negated else parts).append(_PCRE_CLASSES[name])
                    i = end + 2
                    continue
            if c == "\\":
                i = self.set_escape(i, parts)
                continue
            parts.append("\\" + c if c in "[]&~|" else c)
            i += 1
        if negated_classes:
            if parts or negate or len(negated_classes) > 1:
                raise ValueError(f"a negated POSIX class inside a larger set is not supported"
                                 f" by Python re: {p[start:i]}")
            self.out.append("[^" + negated_classes[0] + "]")
        else:
            self.out.append("[" + ("^" if negate else "") + "".join(parts) + "]")
        return i

    def set_escape(self, i, parts):
        p, n = self.p, self.n
        if i + 1 >= n:
            raise ValueError("missing terminating ] for character class")
        d = p[i + 1]
        if d == "Q":
            end = p.find("\\E", i + 2)
            literal = p[i + 2:] if end < 0 else p[i + 2:end]
            parts.extend(class_char(ch) for ch in literal)
            return n if end < 0 else end + 2
        if d == "E":
            return i + 2
        if d in _SET_ESCAPES:
            parts.append(_SET_ESCAPES[d])
            return i + 2
        if d in "HVRN":
            raise ValueError(f"\\{d} inside a character class is not supported")
        if d == "e":
            parts.append("\\x1b")
            return i + 2
        if d in ("x", "o") and i + 2 < n and p[i + 2] == "{":
            char, i = _braced_code(p, i)
            parts.append(class_char(char))
            return i
        if d == "c" and i + 2 < n:
            parts.append(class_char(chr(ord(p[i + 2].upper()) ^ 0x40)))
            return i + 3
        if d in _UNSUPPORTED_ESCAPES:
            raise ValueError(f"{_UNSUPPORTED_ESCAPES[d]} is not supported by Python re")
        parts.append(p[i:i + 2])
        return i + 2

    # -- groups ---------------------------------------------------------------
    def open_group(self, i):
        p, n, out = self.p, self.n, self.out
        frame = self.stack[-1]
        if p.startswith("(*", i):
            raise ValueError("backtracking verbs (*...) are not supported by Python re")
        if not p.startswith("(?", i):
            self.groups += 1
            out.append("(")
            self.stack.append(_Frame(frame.verbose, frame.multiline))
            return i + 1
        rest = p[i + 2:i + 3]
        if rest == "#":
            end = p.find(")", i)
            end = n if end < 0 else end + 1
            out.append(p[i:end])
            return end
        if rest in ("<", "'") and i + 3 < n and p[i + 3] not in "=!":
            close = ">" if rest == "<" else "'"
            match = _NAME.match(p, i + 3)
            if match is None or not p.startswith(close, match.end()):
                raise ValueError("bad group name after (?" + rest)
            self.groups += 1
            out.append(f"(?P<{match.group(0)}>")
            self.stack.append(_Frame(frame.verbose, frame.multiline))
            return match.end() + 1
        if p.startswith("(?P=", i):
            end = p.find(")", i)
            end = n if end < 0 else end + 1
            out.append(p[i:end])
            return end
        if p.startswith("(?P<", i):
            self.groups += 1
            out.append("(?P<")
            self.stack.append(_Frame(frame.verbose, frame.multiline))
            return i + 4
        if rest in (":", "=", "!", ">") or p.startswith("(?<=", i) or p.startswith("(?<!", i):
            prefix = "(?<" + p[i + 3] if rest == "<" else "(?" + rest
            out.append(prefix)
            self.stack.append(_Frame(frame.verbose, frame.multiline))
            return i + len(prefix)
        if rest == "(":
            end = p.find(")", i + 3)
            if end < 0:
                raise ValueError("missing ) after the condition of (?(")
            out.append(p[i:end + 1])
            self.stack.append(_Frame(frame.verbose, frame.multiline))
            return end + 1
        match = _FLAG_GROUP.match(p, i)
        if match is None:
            what = p[i:i + 4]
            raise ValueError(f"\"{what}...\" (recursion, subroutine call, branch reset or"
                             f" callout) is not supported by Python re")
        letters, kind = match.groups()
        if not set(letters) <= set("imsxnUJX^-"):
            raise ValueError(f"\"(?{letters}\" (recursion or subroutine call) is not supported"
                             f" by Python re")
        if not set(letters) <= _PY_INLINE_FLAGS or letters.startswith("^"):
            raise ValueError(f"inline option \"(?{letters}\" is not supported by Python re")
        on, _, off = letters.partition("-")
        verbose = ("x" in on) or (frame.verbose and "x" not in off)
        multiline = ("m" in on) or (frame.multiline and "m" not in off)
        if kind == ":":
            out.append(f"(?{letters}:")
            self.stack.append(_Frame(verbose, multiline))
        elif letters.strip("-"):
            wrapper = f"(?{letters}:"
            out.append(wrapper)
            frame.wrappers.append(wrapper)
            frame.verbose = verbose
            frame.multiline = multiline
        return match.end()


def _literal(char):
    """One literal character outside a set."""
    if char.isascii() and char.isalnum():
        return char
    return class_char(char)


def _braced_code(p, i):
    """``\\x{hh}`` or ``\\o{oo}`` at i -> (character, next index)."""
    end = p.find("}", i + 3)
    if end < 0:
        raise ValueError(f"missing }} after \\{p[i + 1]}{{")
    digits = p[i + 3:end]
    try:
        code = int(digits, 16 if p[i + 1] == "x" else 8)
        return chr(code), end + 1
    except (ValueError, OverflowError):
        raise ValueError(f"bad character code \\{p[i + 1]}{{{digits}}}") from None


def translate_pcre(pattern, extended=False, multiline=False, ungreedy=False,
                   dollar_endonly=False):
    """Translate a PCRE pattern; raises ValueError saying what is not supported."""
    return _Translator(pattern, extended, multiline, ungreedy, dollar_endonly).run()
