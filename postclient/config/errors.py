"""Configuration errors that say where they came from.

Exports ConfigError, raised by every parser of configuration input (main.cf,
master.cf, lookup tables, ``-o`` overrides).  Its text has the form
``FILE:LINE: what was wrong (what was expected)``, like Postfix's own
messages, so that an operator can go straight to the offending line.  Commands
that catch it exit with EX_CONFIG (78).
"""


class ConfigError(Exception):
    """A configuration input is malformed; ``str()`` names file and line."""

    def __init__(self, source, line, message):
        self.source = source
        self.line = line
        self.message = message
        super().__init__(self.__str__())

    def __str__(self):
        where = self.source or "(unknown)"
        if self.line:
            where = f"{where}:{self.line}"
        return f"{where}: {self.message}"


class ConfigWarning(ConfigError):
    """A non-fatal remark (unknown parameter, ...) located like a ConfigError.

    It is never raised: parsers collect warnings in lists and commands print
    them with a ``warning:`` prefix, as postconf does.
    """
