"""main.cf syntax: reading ``name = value`` settings and editing them in place.

Exports Setting, logical_lines(), read_main_cf(), parse_assignment() and
edit_main_cf().

Postfix rules: ``#`` starts a comment line; blank and comment lines are
ignored; a line that starts with whitespace continues the previous logical
line; ``name = value`` with whitespace around ``=`` optional; the last setting
of a name wins.  Values are stored raw: ``$name`` expansion happens when a
value is used (config.Config), as in Postfix.
"""

import os
import re

from ..record import Record
from .errors import ConfigError, ConfigWarning

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


class Setting(Record):
    __slots__ = ("name", "value", "source", "line")

    def __init__(self, name, value, source, line=None):
        self.name = name
        self.value = value
        self.source = source        # the file, "-o" or "(default)"
        self.line = line


def logical_lines(text, source):
    """Yield (first_line_number, last_line_number, logical_line) of a Postfix config file.

    Raises ConfigError for a continuation line with nothing to continue.
    """
    current = None
    first = last = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if raw[0] in " \t":
            if current is None:
                raise ConfigError(source, number,
                                  "line starts with whitespace but continues nothing "
                                  "(expected a line starting in column 1)")
            current += " " + stripped
            last = number
            continue
        if current is not None:
            yield first, last, current
        current, first, last = stripped, number, number
    if current is not None:
        yield first, last, current


def parse_assignment(text, source, line):
    """Split ``name = value``; ConfigError if it is not one."""
    name, equals, value = text.partition("=")
    name = name.strip()
    if not equals:
        raise ConfigError(source, line, f'missing "=" in "{text[:60]}" (expected name = value)')
    if not name or not _NAME_RE.match(name):
        raise ConfigError(source, line,
                          f'bad parameter name "{name}" (expected letters, digits, "_", "." or "-")')
    return Setting(name, value.strip(), source, line)


def read_main_cf(path):
    """Return ({name: Setting}, [ConfigWarning]) for the file at ``path``.

    A missing or unreadable file is a ConfigError naming it.
    """
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            text = handle.read()
    except OSError as error:
        raise ConfigError(path, None, f"cannot read: {error.strerror}") from None
    settings = {}
    warnings = []
    for first, _last, line in logical_lines(text, path):
        setting = parse_assignment(line, path, first)
        previous = settings.get(setting.name)
        if previous is not None:
            warnings.append(ConfigWarning(path, first,
                                          f"{setting.name}: overriding earlier entry at line {previous.line}"))
        settings[setting.name] = setting
    return settings, warnings


def edit_main_cf(path, assignments=(), removals=()):
    """Set ``assignments`` ([(name, value)]) and delete ``removals`` in main.cf.

    Comments, blank lines and every other setting are kept byte for byte.  An
    existing setting is replaced where it stands (continuation lines included);
    a new one is appended.  The file is replaced atomically.
    """
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            lines = handle.read().splitlines(keepends=True)
    except FileNotFoundError:
        lines = []
    except OSError as error:
        raise ConfigError(path, None, f"cannot read: {error.strerror}") from None
    wanted = dict(assignments)
    removing = set(removals)
    spans = {}
    for first, last, logical in logical_lines("".join(lines), path):
        name = logical.partition("=")[0].strip()
        spans.setdefault(name, []).append((first, last))
    replacement = {}
    for name, ranges in spans.items():
        if name in wanted or name in removing:
            for first, last in ranges:
                new = _assignment(name, wanted[name]) if name in wanted else ""
                replacement[first - 1] = (last - first + 1, new)
    output = []
    index = 0
    while index < len(lines):
        if index in replacement:
            count, new = replacement[index]
            output.append(new)
            index += count
            continue
        output.append(lines[index])
        index += 1
    if output and not output[-1].endswith("\n"):
        output[-1] += "\n"
    for name, value in assignments:
        if name not in spans:
            output.append(_assignment(name, value))
    _replace_file(path, "".join(output))


def _assignment(name, value):
    return f"{name} = {value}".rstrip() + "\n"


def _replace_file(path, text):
    directory = os.path.dirname(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    import tempfile         # here: every command reads main.cf, few write it

    handle, temporary = tempfile.mkstemp(prefix=".main.cf.", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", errors="surrogateescape") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
