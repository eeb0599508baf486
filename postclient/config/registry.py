"""The parameter registry: name -> Parameter(type, default, bounds, doc).

Exports Parameter, REGISTRY (dict of every known parameter, including the
lmtp_* mirrors), lookup(name) and protocol_name(name, protocol).

The registry is built once at import from the declarative table in
parameters.py.  A mistake in that table is a bug in postclient, so it fails
loudly at import rather than at some later lookup.
"""

from ..record import Record
from . import parameters, types

DYNAMIC = "@dynamic"


class Parameter(Record):
    __slots__ = ("name", "type", "default", "doc", "minimum", "maximum", "unit", "choices",
                 "also_allowed", "mirror_of")

    def __init__(self, name, type, default, doc, minimum=None, maximum=None, unit=None,
                 choices=(), also_allowed=(), mirror_of=None):
        self.name = name
        self.type = type                    # one of the types in types.py (types.TIME...)
        self.default = default
        self.doc = doc
        self.minimum = minimum
        self.maximum = maximum
        self.unit = unit
        self.choices = choices
        self.also_allowed = also_allowed    # values accepted outside [minimum, maximum] ("0,2..": 0 = off)
        self.mirror_of = mirror_of

    @property
    def dynamic(self):
        return self.default == DYNAMIC

    def format_bound(self, number):
        if self.type is types.TIME:
            return f"{number}s"
        return str(number)

    def parse(self, text):
        """Typed value of ``text`` (already expanded); ValueError if malformed."""
        return self.type.parse(text, self)


def _parse_bound(text, kind, unit, where):
    text = text.strip()
    if not text:
        return None
    if kind is types.TIME:
        probe = Parameter("bound", types.TIME, "", "", unit=unit)
        return types.TIME.parse(text, probe)
    try:
        return int(text)
    except ValueError:
        raise AssertionError(f"parameters.py: {where}: bad bound {text!r}") from None


def _parse_type(spec, where):
    unit = None
    choices = ()
    if "(" in spec:
        spec, _, rest = spec.partition("(")
        choices = tuple(rest.rstrip(")").split("/"))
    if ":" in spec:
        spec, unit = spec.split(":", 1)
    aliases = {"bool": "boolean", "int": "integer", "str": "string"}
    kind = types.BY_NAME.get(aliases.get(spec, spec))
    if kind is None:
        raise AssertionError(f"parameters.py: {where}: unknown type {spec!r}")
    return kind, unit, choices


def _build_table(text):
    table = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        columns = [c.strip() for c in line.split("|")]
        if len(columns) != 5:
            raise AssertionError(f"parameters.py: table line {number}: need 5 columns: {line!r}")
        name, type_spec, default, bounds, doc = columns
        kind, unit, choices = _parse_type(type_spec, name)
        # "MIN..MAX", optionally with single extra values: "0,2.." = 0, or 2 and up.
        pieces = bounds.split(",")
        ranges = [p for p in pieces if ".." in p] or [""]
        extra = [p for p in pieces if ".." not in p and p.strip()]
        low, _, high = ranges[0].partition("..")
        param = Parameter(name, kind, default, doc,
                          minimum=_parse_bound(low, kind, unit, name),
                          maximum=_parse_bound(high, kind, unit, name),
                          unit=unit, choices=choices,
                          also_allowed=tuple(_parse_bound(v, kind, unit, name) for v in extra))
        if name in table:
            raise AssertionError(f"parameters.py: duplicate parameter {name}")
        table[name] = param
    return table


def lmtp_mirror_name(smtp_name):
    return parameters.LMTP_RENAMES.get(smtp_name, "lmtp_" + smtp_name[len("smtp_"):])


def _smtp_names_longest_first(table):
    return sorted((name for name in table if name.startswith("smtp_")), key=len, reverse=True)


def _add_lmtp_mirrors(table):
    for name, param in list(table.items()):
        if not name.startswith("smtp_") or name in parameters.SMTP_ONLY:
            continue
        mirror = lmtp_mirror_name(name)
        if mirror in table:
            continue
        default = parameters.LMTP_DEFAULTS.get(mirror, param.default)
        # A default that refers to another smtp_* parameter refers to its mirror
        # (longest names first: $smtp_foo_bar before $smtp_foo).
        if "$smtp_" in default:
            for other in _smtp_names_longest_first(table):
                if ("$" + other) in default:
                    default = default.replace("$" + other, "$" + lmtp_mirror_name(other))
        table[mirror] = param.replace(
            name=mirror, default=default,
            doc=param.doc.replace("SMTP", "LMTP") + " (LMTP)", mirror_of=name)
    return table


REGISTRY = _add_lmtp_mirrors(_build_table(parameters.TABLE))


def lookup(name):
    """The Parameter called ``name``, or None for an unknown name."""
    return REGISTRY.get(name)


def protocol_name(name, protocol):
    """The name of an smtp_* parameter in the given protocol's namespace.

    ``protocol_name("smtp_helo_name", "lmtp") == "lmtp_lhlo_name"``: the
    delivery agent asks for smtp_* names and gets the LMTP table when it runs
    as lmtp, as Postfix's SMTP and LMTP parameter tables do.
    """
    if protocol == "lmtp" and name.startswith("smtp_") and name not in parameters.SMTP_ONLY:
        return lmtp_mirror_name(name)
    return name
