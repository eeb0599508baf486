"""Brace grouping and list splitting, as Postfix's balpar/extpar/mystrtokq.

Exports:
    SEPARATORS        ", \\t\\r\\n": what separates list elements
    balanced_length   length of the ``{...}`` group at the start of a text
    strip_braces      ``{ text }`` -> ``text`` (raises ValueError on bad syntax)
    split_list        split on separators, never inside ``{...}``
    inline_rules      ``{ {rule 1}, {rule 2} }`` -> rule texts, for inline
                      regexp:/pcre:/cidr: bodies (Postfix 3.7 dict_stream)

These rules are shared by lookup-table lists (``hash:/a, inline:{ a=b, c=d }``),
``inline:`` and ``static:{...}`` values, and inline pattern-table bodies, so
that one text means the same thing wherever it appears.

Reads no configuration parameters.
"""

SEPARATORS = ", \t\r\n"


def balanced_length(text, parens="{}"):
    """Length of the balanced group that starts ``text``, or 0 if none.

    ``text`` must start with the opening parenthesis; the group ends where
    the nesting level returns to zero.
    """
    if not text or text[0] != parens[0]:
        return 0
    level = 0
    for index, char in enumerate(text):
        if char == parens[0]:
            level += 1
        elif char == parens[1]:
            level -= 1
            if level == 0:
                return index + 1
    return 0


def strip_braces(text, parens="{}"):
    """Return the text inside ``{ ... }`` with surrounding whitespace removed.

    Raises ValueError with Postfix's wording when the text does not start
    with ``{``, when the closing ``}`` is missing, or when text follows it.
    """
    if not text or text[0] != parens[0]:
        raise ValueError(f"no '{parens[0]}' at start of text in \"{text}\"")
    length = balanced_length(text, parens)
    if length == 0:
        raise ValueError(f"missing '{parens[1]}' in \"{text}\"")
    if length != len(text):
        raise ValueError(f"syntax error after '{parens[1]}' in \"{text}\"")
    return text[1:length - 1].strip(" \t\r\n\v\f")


def split_list(text, separators=SEPARATORS, parens="{}"):
    """Split ``text`` on runs of separators, keeping ``{...}`` groups whole.

    Like Postfix's mystrtokq(): a separator inside braces does not split,
    and empty elements do not exist.
    """
    tokens = []
    current = []
    level = 0
    for char in text:
        if char == parens[0]:
            level += 1
        elif level > 0 and char == parens[1]:
            level -= 1
        elif level == 0 and char in separators:
            if current:
                tokens.append("".join(current))
                current = []
            continue
        current.append(char)
    if current:
        tokens.append("".join(current))
    return tokens


def inline_rules(body):
    """Rules of an inline pattern table: ``{ {rule}, {rule} }`` -> [rule, ...].

    Each rule must itself be enclosed in braces, as in Postfix, because a
    rule contains whitespace.  Raises ValueError on bad syntax.
    """
    length = balanced_length(body)
    if length == 0:
        raise ValueError(f"missing '}}' in \"{body}\"")
    if length != len(body):
        raise ValueError(f"syntax error after '}}' in \"{body}\"")
    return [strip_braces(token) for token in split_list(body[1:-1])]
