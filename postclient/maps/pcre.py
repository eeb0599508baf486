"""``pcre:FILE``: Postfix pcre_table(5), matched with Python ``re``.

Exports:
    PcreTable   ``PcreTable(spec, path_or_inline_rules)``

File grammar: see ``pattern_file.py`` (no ``/p1/!/p2/`` form: PCRE has
look-aheads).  Flags toggle PCRE options, from Postfix's defaults of
caseless and dotall:

    i  case-insensitive (on by default)    -> re.IGNORECASE
    s  dot matches newline (on by default) -> re.DOTALL
    m  ^ and $ at line boundaries          -> re.MULTILINE
    x  extended (spaces, # comments)       -> re.VERBOSE
    A  anchored at the start of the key    -> Pattern.match instead of search
    E  $ only at the very end              -> $ becomes \\Z (unless m)
    U  ungreedy                            -> greedy and lazy quantifiers swapped
    X  PCRE "extra": obsolete in PCRE2; ignored with a warning, as Postfix
       does (Python already rejects unknown escapes, which is what X did)

Any other flag is an error.  Patterns go through
``pcre_regex.translate_pcre``, which lists what is rewritten and what is not
supported.  Matching uses ``re.ASCII`` (``\\w``, ``\\d``, ``\\s``, ``\\b`` and
case-insensitivity are ASCII-only, like PCRE without UTF/UCP); ``.`` matches
one character where PCRE matches one byte.

Reads no configuration parameters.
"""

import re
import warnings

from postclient.config.errors import ConfigError

from .pattern_file import PatternTable
from .pcre_regex import pcre_flags, translate_pcre
from .table import logger


class PcreTable(PatternTable):
    kind = "pcre"

    def compile_pattern(self, pattern, flags, source, line):
        caseless, dotall, multiline, extended = True, True, False, False
        anchored, dollar_endonly, ungreedy = False, False, False
        for flag in flags:
            if flag == "i":
                caseless = not caseless
            elif flag == "s":
                dotall = not dotall
            elif flag == "m":
                multiline = not multiline
            elif flag == "x":
                extended = not extended
            elif flag == "A":
                anchored = not anchored
            elif flag == "E":
                dollar_endonly = not dollar_endonly
            elif flag == "U":
                ungreedy = not ungreedy
            elif flag == "X":
                logger.warning("%s:%d: ignoring obsolete regexp option \"X\"", source, line)
            else:
                raise ConfigError(source, line, f"unknown regexp option \"{flag}\""
                                  f" (expected i, m, s, x, A, E, U or X)")
        try:
            text = translate_pcre(pattern, extended, multiline, ungreedy, dollar_endonly)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compiled = re.compile(text, pcre_flags(caseless, multiline, dotall, extended))
        except ValueError as exc:
            raise ConfigError(source, line,
                              f"bad regular expression \"{pattern}\": {exc}") from None
        except re.error as exc:
            raise ConfigError(source, line, f"bad regular expression \"{pattern}\": {exc.msg}"
                              ) from None
        return (compiled.match if anchored else compiled.search), compiled.groups
