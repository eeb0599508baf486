"""The effective configuration: main.cf + ``-o`` overrides + registry defaults.

Exports Config, config_directory(), parse_override() and DEFAULT_CONFIG_DIR.

A value is looked up in this order: ``-o name=value`` overrides, main.cf, the
registry default.  ``$name``, ``${name}``, ``$(name)``, ``${name?text}`` (text
when name is non-empty) and ``${name:text}`` (text when name is empty) are
expanded when the value is used, so later settings and overrides take part,
as in Postfix; ``$$`` is a literal dollar.  Expansion that refers back to
itself is reported with the chain of names.  Typed values are parsed by the
parameter's type and cached; every error names the file and line where the
offending value was set.
"""

import os
import re
import socket

from . import maincf, registry
from .errors import ConfigError, ConfigWarning

DEFAULT_CONFIG_DIR = "/etc/postclient"
_MAX_DEPTH = 100
_NAME_CHARS = re.compile(r"[A-Za-z0-9_]+")


def config_directory(option=None):
    """``-c DIR``, else $POSTCLIENT_CONFIG_DIR, else /etc/postclient."""
    return option or os.environ.get("POSTCLIENT_CONFIG_DIR") or DEFAULT_CONFIG_DIR


def parse_override(text, source="-o", line=None):
    """A ``-o name=value`` argument as a Setting."""
    return maincf.parse_assignment(text, source, line)


def _host_name():
    name = socket.gethostname() or "localhost"
    return name if "." in name else name + ".localdomain"


class Config:
    """main.cf plus overrides, with Postfix expansion and typed access."""

    def __init__(self, config_dir, settings=None, overrides=(), process_name="postclient",
                 main_cf_path=None):
        self.config_dir = config_dir
        self.main_cf_path = main_cf_path or os.path.join(config_dir, "main.cf")
        self.settings = dict(settings or {})
        self.overrides = {s.name: s for s in overrides}
        self.process_name = process_name
        self.warnings = []
        self._cache = {}
        # What other modules make from this Config and keep with it (opened
        # tables, settings objects): a Config never changes.
        self.derived = {}

    @classmethod
    def load(cls, config_dir=None, overrides=(), process_name="postclient", require_main_cf=True):
        """Read ``DIR/main.cf``; ``overrides`` are ``-o`` strings or Settings."""
        config_dir = config_directory(config_dir)
        path = os.path.join(config_dir, "main.cf")
        settings, warnings = {}, []
        if require_main_cf or os.path.exists(path):
            settings, warnings = maincf.read_main_cf(path)
        parsed = [o if isinstance(o, maincf.Setting) else parse_override(o) for o in overrides]
        config = cls(config_dir, settings, parsed, process_name, main_cf_path=path)
        config.warnings.extend(warnings)
        config.warnings.extend(config._unknown_parameter_warnings())
        return config

    def with_overrides(self, overrides):
        """A copy with further overrides (master.cf ``-o`` for one service)."""
        merged = list(self.overrides.values()) + list(overrides)
        copy = Config(self.config_dir, self.settings, merged, self.process_name, self.main_cf_path)
        copy.warnings = list(self.warnings)
        return copy

    # --- raw values ------------------------------------------------------------
    def setting(self, name):
        """The Setting in force for ``name`` (override, main.cf or default), or None."""
        if name in self.overrides:
            return self.overrides[name]
        if name in self.settings:
            return self.settings[name]
        param = registry.lookup(name)
        if param is None:
            return None
        return maincf.Setting(name, self._default(param), "(default)", None)

    def raw(self, name):
        setting = self.setting(name)
        return "" if setting is None else setting.value

    def is_set(self, name):
        return name in self.overrides or name in self.settings

    def default(self, name):
        param = registry.lookup(name)
        return None if param is None else self._default(param)

    def _default(self, param):
        if not param.dynamic:
            return param.default
        if param.name == "myhostname":
            return _host_name()
        if param.name == "mydomain":
            host = self.expand_value(self.raw("myhostname"), "myhostname")
            return host.partition(".")[2] or "localdomain"
        if param.name == "config_directory":
            return self.config_dir
        if param.name == "process_id":
            return str(os.getpid())
        if param.name == "process_name":
            return self.process_name
        raise AssertionError(f"no dynamic default for {param.name}")

    # --- expansion -------------------------------------------------------------
    def expand(self, name):
        """The value of ``name`` with every ``$name`` expanded."""
        return self._expand_name(name, ())

    def expand_value(self, text, context):
        """Expand ``text`` as if it were the value of parameter ``context``."""
        return self._expand_text(text, (context,))

    def _expand_name(self, name, stack):
        if name in stack:
            chain = " -> ".join(stack + (name,))
            origin = self.setting(stack[0])
            raise ConfigError(origin.source if origin else self.main_cf_path,
                              origin.line if origin else None,
                              f"{stack[0]}: recursive expansion: {chain} "
                              f"(expected no parameter to refer back to itself)")
        if len(stack) >= _MAX_DEPTH:
            origin = self.setting(stack[0])
            raise ConfigError(origin.source, origin.line,
                              f"{stack[0]}: expansion nested deeper than {_MAX_DEPTH} levels")
        setting = self.setting(name)
        if setting is None:
            return ""
        return self._expand_text(setting.value, stack + (name,))

    def _expand_text(self, text, stack):
        out = []
        index = 0
        length = len(text)
        while index < length:
            dollar = text.find("$", index)
            if dollar < 0:
                out.append(text[index:])
                break
            out.append(text[index:dollar])
            index = dollar + 1
            if index >= length:
                out.append("$")
                break
            char = text[index]
            if char == "$":
                out.append("$")
                index += 1
            elif char in "{(":
                close = self._matching(text, index, stack)
                out.append(self._expand_braced(text[index + 1:close], stack))
                index = close + 1
            else:
                match = _NAME_CHARS.match(text, index)
                if not match:
                    out.append("$")
                    continue
                out.append(self._expand_name(match.group(0), stack))
                index = match.end()
        return "".join(out)

    def _matching(self, text, start, stack):
        opener = text[start]
        closer = "}" if opener == "{" else ")"
        depth = 0
        for position in range(start, len(text)):
            if text[position] == opener:
                depth += 1
            elif text[position] == closer:
                depth -= 1
                if depth == 0:
                    return position
        origin = self.setting(stack[0]) if stack else None
        raise ConfigError(origin.source if origin else None, origin.line if origin else None,
                          f'{stack[0] if stack else "value"}: missing "{closer}" in "{text}" '
                          f'(expected ${opener}name{closer})')

    def _expand_braced(self, inner, stack):
        match = _NAME_CHARS.match(inner)
        if not match:
            origin = self.setting(stack[0]) if stack else None
            raise ConfigError(origin.source if origin else None, origin.line if origin else None,
                              f'{stack[0] if stack else "value"}: bad macro "${{{inner}}}" '
                              f"(expected ${{name}}, ${{name?text}} or ${{name:text}})")
        name = match.group(0)
        rest = inner[match.end():]
        value = self._expand_name(name, stack)
        if not rest:
            return value
        operator, text = rest[0], rest[1:]
        if operator == "?":
            return self._expand_text(text, stack) if value else ""
        if operator == ":":
            return "" if value else self._expand_text(text, stack)
        origin = self.setting(stack[0]) if stack else None
        raise ConfigError(origin.source if origin else None, origin.line if origin else None,
                          f'{stack[0] if stack else "value"}: bad macro "${{{inner}}}" '
                          f'(expected "?" or ":" after the name)')

    # --- typed values ----------------------------------------------------------
    def get(self, name):
        """The typed value of ``name``; ConfigError naming where it was set."""
        if name in self._cache:
            return self._cache[name]
        param = registry.lookup(name)
        text = self.expand(name)
        if param is None:
            value = text
        else:
            try:
                value = param.parse(text)
            except ValueError as error:
                setting = self.setting(name)
                raise ConfigError(setting.source, setting.line, f"{name}: {error}") from None
        self._cache[name] = value
        return value

    __getitem__ = get

    def validate(self):
        """Every error in the effective configuration, as a list of ConfigError."""
        errors = []
        names = set(registry.REGISTRY) | set(self.settings) | set(self.overrides)
        for name in sorted(names):
            try:
                self.get(name)
            except ConfigError as error:
                errors.append(error)
        return errors

    def _unknown_parameter_warnings(self):
        """Warn about set names that nothing knows or refers to (as postconf does)."""
        referenced = set()
        for setting in list(self.settings.values()) + list(self.overrides.values()):
            referenced.update(re.findall(r"\$[{(]?([A-Za-z0-9_]+)", setting.value))
        warnings = []
        for setting in list(self.settings.values()) + list(self.overrides.values()):
            if registry.lookup(setting.name) is None and setting.name not in referenced:
                warnings.append(ConfigWarning(setting.source, setting.line,
                                              f"unknown parameter: {setting.name}={setting.value}"))
        return warnings


def current_user():
    import getpass      # here: only some parameters' defaults need it
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
