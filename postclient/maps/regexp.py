"""``regexp:FILE``: Postfix regexp_table(5) with POSIX regular expressions.

Exports:
    RegexpTable   ``RegexpTable(spec, path_or_inline_rules)``

File grammar: see ``pattern_file.py``.  Flags after the closing delimiter
toggle regcomp(3) options: ``i`` case sensitivity (matching is
case-insensitive unless ``i`` is given), ``x`` extended syntax (ERE unless
``x`` is given, which selects basic syntax, BRE), ``m`` REG_NEWLINE (``^``,
``$``, ``.`` and ``[^...]`` stop at newlines).  Any other flag is an error.
Patterns are translated to Python ``re`` by ``posix_regex.translate_posix``,
which documents what differs.

Reads no configuration parameters.
"""

import re
import warnings

from postclient.config.errors import ConfigError

from .pattern_file import PatternTable
from .posix_regex import posix_flags, translate_posix


class RegexpTable(PatternTable):
    kind = "regexp"
    second_pattern = True
    flag_stoppers = "!"

    def compile_pattern(self, pattern, flags, source, line):
        icase, newline, extended = True, False, True
        for flag in flags:
            if flag == "i":
                icase = not icase
            elif flag == "m":
                newline = not newline
            elif flag == "x":
                extended = not extended
            else:
                raise ConfigError(source, line, f"unknown regexp option \"{flag}\""
                                  f" (expected i, m or x)")
        try:
            text = translate_posix(pattern, extended, newline)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compiled = re.compile(text, posix_flags(icase, newline))
        except ValueError as exc:
            raise ConfigError(source, line,
                              f"bad regular expression \"{pattern}\": {exc}") from None
        except re.error as exc:
            raise ConfigError(source, line, f"bad regular expression \"{pattern}\": {exc.msg}"
                              ) from None
        return compiled.search, compiled.groups
