"""Tables of ordered rules with if/endif blocks: the part regexp, pcre and cidr share.

Exports RuleTable and the rule kinds MATCH, IF and ENDIF.  Reads nothing.

A rule table is read from a file (``regexp:/etc/postclient/x``) or from an
inline body (``regexp:{ {/a/ b}, {/c/ d} }``, Postfix 3.7).  Its rules are kept
in order; an ``if`` rule records the index of its ``endif`` so that lookups
can skip a whole block.  Subclasses parse one rule (``_parse_rule``) and walk
the rules in their own ``lookup``, which is the hot path.
"""

from postclient.config.errors import ConfigError

from .source import logical_lines, text_lines
from .syntax import inline_rules
from .table import FileState, Table

MATCH, IF, ENDIF = 0, 1, 2


class RuleTable(Table):
    fixed_keys = False

    def __init__(self, spec, arg):
        super().__init__(spec)
        self._state = None
        if arg.startswith("{"):
            try:
                rules = inline_rules(arg)
            except ValueError as exc:
                raise ConfigError(spec, 0, f"{self.kind} map: {exc}") from None
            self._rules = self._parse(text_lines(rules, spec), spec)
        else:
            self.path = arg
            try:
                state = FileState(arg)
            except OSError:
                state = None        # logical_lines() reports it
            self._rules = self._parse(logical_lines(arg, self.kind), arg)
            self._state = state

    def _parse_rule(self, text, source, number, open_ifs):
        """One rule object with ``op``, ``line`` and ``endif`` attributes."""
        raise NotImplementedError

    def _parse(self, lines, source):
        rules = []
        open_ifs = []
        for number, text in lines:
            rule = self._parse_rule(text, source, number, open_ifs)
            if rule.op == IF:
                open_ifs.append(len(rules))
            elif rule.op == ENDIF:
                rules[open_ifs.pop()].endif = len(rules)
            rules.append(rule)
        if open_ifs:
            raise ConfigError(source, rules[open_ifs[-1]].line, "if has no matching endif")
        return rules

    def changed(self):
        return self._state is not None and self._state.changed()
