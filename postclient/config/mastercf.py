"""master.cf: the services the master runs, in Postfix's eight columns.

Exports Service, read_master_cf(), parse_master_cf(), split_arguments() and
format_service().

Columns: service, type (unix, inet, fifo, pass), private, unpriv, chroot,
wakeup, maxproc, command + arguments; ``-`` means the default.  Logical lines
continue on lines that start with whitespace.  Arguments are split on
whitespace; ``{ text with spaces }`` is one argument (Postfix 3.x), which also
allows ``-o { name = value with spaces }``.  ``-o name=value`` arguments are
per-service main.cf overrides.  Reads default_process_limit for maxproc "-".
"""

import dataclasses
import re

from . import maincf, registry
from .errors import ConfigError, ConfigWarning

SERVICE_TYPES = ("unix", "inet", "fifo", "pass", "unix-dgram")
_YES_NO = {"y": True, "n": False}
_WAKEUP_RE = re.compile(r"^(\d+)(\??)$")


@dataclasses.dataclass
class Service:
    name: str
    type: str
    private: bool
    unprivileged: bool
    chroot: bool
    wakeup: int            # seconds; 0 = no wakeup
    wakeup_after_use: bool  # "N?": only after the service was used
    maxproc: int           # 0 = unlimited; None = default_process_limit
    command: str
    arguments: list
    overrides: list        # [maincf.Setting] from -o
    columns: list          # the 7 first columns as written
    source: str
    line: int

    @property
    def key(self):
        return f"{self.name}/{self.type}"

    def process_limit(self, config):
        return config.get("default_process_limit") if self.maxproc is None else self.maxproc


def split_arguments(text, source, line):
    """Split on whitespace; ``{ ... }`` is one argument with the braces removed."""
    words = []
    index = 0
    while index < len(text):
        if text[index].isspace():
            index += 1
            continue
        if text[index] == "{":
            depth, end = 0, index
            while end < len(text):
                if text[end] == "{":
                    depth += 1
                elif text[end] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                end += 1
            if depth:
                raise ConfigError(source, line, f'missing "}}" in "{text[index:index + 40]}" '
                                                f'(expected {{ text }})')
            words.append(text[index + 1:end].strip())
            index = end + 1
            continue
        end = index
        while end < len(text) and not text[end].isspace():
            end += 1
        words.append(text[index:end])
        index = end
    return words


def _flag(value, default, column, source, line):
    if value == "-":
        return default
    if value not in _YES_NO:
        raise ConfigError(source, line, f'{column} column: bad value "{value}" (expected y, n or -)')
    return _YES_NO[value]


def _parse_service(words, source, line, warnings):
    if len(words) < 8:
        raise ConfigError(source, line,
                          f"only {len(words)} of 8 columns in \"{' '.join(words)}\" (expected "
                          "service type private unpriv chroot wakeup maxproc command)")
    name, kind, private, unpriv, chroot, wakeup, maxproc = words[:7]
    if kind not in SERVICE_TYPES:
        raise ConfigError(source, line, f'{name}: bad service type "{kind}" '
                                        f'(expected one of: {", ".join(SERVICE_TYPES)})')
    wakeup_seconds, after_use = 0, False
    if wakeup != "-":
        match = _WAKEUP_RE.match(wakeup)
        if not match:
            raise ConfigError(source, line, f'{name}: wakeup column: bad value "{wakeup}" '
                                            f'(expected seconds, seconds followed by "?", or -)')
        wakeup_seconds, after_use = int(match.group(1)), bool(match.group(2))
    if maxproc == "-":
        process_limit = None
    elif maxproc.isdigit():
        process_limit = int(maxproc)
    else:
        raise ConfigError(source, line, f'{name}: maxproc column: bad value "{maxproc}" '
                                        f"(expected a number of processes, 0 = no limit, or -)")
    command, arguments, overrides = words[7], [], []
    rest = words[8:]
    index = 0
    while index < len(rest):
        word = rest[index]
        if word == "-o" or (word.startswith("-o") and len(word) > 2):
            if word == "-o":
                index += 1
                if index >= len(rest):
                    raise ConfigError(source, line, f"{name}: -o without a value (expected -o name=value)")
                word = rest[index]
            else:
                word = word[2:]
            setting = maincf.parse_assignment(word, source, line)
            if registry.lookup(setting.name) is None:
                warnings.append(ConfigWarning(source, line,
                                              f"{name}: -o {setting.name}: unknown parameter"))
            overrides.append(setting)
        else:
            arguments.append(word)
        index += 1
    return Service(name=name, type=kind,
                   private=_flag(private, True, "private", source, line),
                   unprivileged=_flag(unpriv, True, "unpriv", source, line),
                   chroot=_flag(chroot, False, "chroot", source, line),
                   wakeup=wakeup_seconds, wakeup_after_use=after_use,
                   maxproc=process_limit, command=command, arguments=arguments,
                   overrides=overrides, columns=list(words[:7]), source=source, line=line)


def parse_master_cf(text, source):
    """Return ([Service], [ConfigWarning]); ConfigError on the first bad entry."""
    services, warnings, seen = [], [], {}
    for first, _last, logical in maincf.logical_lines(text, source):
        words = split_arguments(logical, source, first)
        service = _parse_service(words, source, first, warnings)
        if service.key in seen:
            raise ConfigError(source, first, f"duplicate service {service.key} "
                                             f"(first defined at line {seen[service.key]})")
        seen[service.key] = first
        services.append(service)
    return services, warnings


def read_master_cf(path):
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            text = handle.read()
    except OSError as error:
        raise ConfigError(path, None, f"cannot read: {error.strerror}") from None
    return parse_master_cf(text, path)


def _quote(word):
    return "{ " + word + " }" if (not word or any(c.isspace() for c in word)) else word


def format_service(service):
    """One service in ``postclient conf -M`` form (postconf -M's column layout)."""
    head = "{:<10} {:<5} {:<7} {:<7} {:<7} {:<7} {:<7}".format(*service.columns)
    tail = [service.command]
    tail += [f"-o {_quote(f'{s.name}={s.value}')}" for s in service.overrides]
    tail += [_quote(argument) for argument in service.arguments]
    return head + " " + " ".join(tail)
