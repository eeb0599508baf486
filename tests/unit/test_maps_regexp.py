"""regexp: and pcre: tables, their shared grammar and the pattern translators."""

import logging
import re

import pytest

from postclient.config.errors import ConfigError
from postclient.maps import open_table
from postclient.maps.pattern_file import parse_replacement
from postclient.maps.pcre_regex import translate_pcre
from postclient.maps.posix_regex import translate_posix


def table_from(tmp_path, kind, text, name="table"):
    path = tmp_path / name
    path.write_text(text)
    return open_table(f"{kind}:{path}"), str(path)


def error_from(tmp_path, kind, text):
    path = tmp_path / "bad"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        open_table(f"{kind}:{path}")
    return str(path), str(info.value)


BOTH = pytest.mark.parametrize("kind", ["regexp", "pcre"])


# -- rules shared by regexp and pcre ---------------------------------------------


@BOTH
def test_first_matching_rule_wins(tmp_path, kind):
    table, _ = table_from(tmp_path, kind, "/^a/ first\n/^ab/ second\n/b$/ third\n")
    assert table.lookup("abc") == "first"
    assert table.lookup("xb") == "third"
    assert table.lookup("zzz") is None
    assert table.kind == kind and table.fixed_keys is False


@BOTH
def test_case_insensitive_by_default_and_i_toggles(tmp_path, kind):
    table, _ = table_from(tmp_path, kind, "/^abc$/ insensitive\n/^XYZ$/i sensitive\n")
    assert table.lookup("ABC") == "insensitive"
    assert table.lookup("XYZ") == "sensitive"
    assert table.lookup("xyz") is None


@BOTH
def test_key_is_not_case_folded_for_substitution(tmp_path, kind):
    table, _ = table_from(tmp_path, kind, "/^(.*)@(.*)$/ ${2}:$1\n")
    assert table.lookup("John@Example.COM") == "Example.COM:John"


@BOTH
def test_substitution_forms_and_literal_dollar(tmp_path, kind):
    table, _ = table_from(tmp_path, kind,
                          "/^(a+)(b*)(c?)x$/ [$1][${2}][$(3)] costs $$5\n/^z/ $$$$\n")
    assert table.lookup("aabx") == "[aa][b][] costs $5"
    assert table.lookup("zz") == "$$"


@BOTH
def test_unmatched_group_substitutes_nothing(tmp_path, kind):
    table, _ = table_from(tmp_path, kind, "/^(x)|(y)$/ <$1|$2>\n")
    assert table.lookup("y") == "<|y>"


@BOTH
def test_negated_rule(tmp_path, kind):
    table, _ = table_from(tmp_path, kind, "!/@example\\.com$/ foreign\n/./ local\n")
    assert table.lookup("a@example.org") == "foreign"
    assert table.lookup("a@example.com") == "local"


@BOTH
def test_double_negation_and_space_after_bang(tmp_path, kind):
    table, _ = table_from(tmp_path, kind, "!! /^a/ yes\n! /^b/ not-b\n")
    assert table.lookup("a") == "yes"
    assert table.lookup("c") == "not-b"
    assert table.lookup("b") is None


@BOTH
def test_if_endif_nesting(tmp_path, kind):
    text = ("if /@example\\.com$/\n"
            "if !/^admin/\n"
            "/^sales/ sales-team\n"
            "/./ user-at-example\n"
            "endif\n"
            "/^admin/ admin\n"
            "ENDIF\n"
            "/./ elsewhere\n")
    table, _ = table_from(tmp_path, kind, text)
    assert table.lookup("sales@example.com") == "sales-team"
    assert table.lookup("bob@example.com") == "user-at-example"
    assert table.lookup("admin@example.com") == "admin"
    assert table.lookup("sales@example.org") == "elsewhere"


@BOTH
def test_if_block_skipped_entirely_when_condition_fails(tmp_path, kind):
    text = "if /^never$/\nif /./\n/./ inner\nendif\nendif\n/./ after\n"
    table, _ = table_from(tmp_path, kind, text)
    assert table.lookup("x") == "after"


@BOTH
def test_comments_blank_lines_and_continuations(tmp_path, kind):
    text = "# header\n\n/^a/ first part\n  and more\n# comment\n/^b/ b\n"
    table, _ = table_from(tmp_path, kind, text)
    assert table.lookup("a") == "first part  and more"
    assert table.lookup("b") == "b"


@BOTH
def test_other_delimiters_and_escaped_delimiter(tmp_path, kind):
    table, _ = table_from(tmp_path, kind, "|^a/b$| slash\n/^c\\/d$/ escaped\n")
    assert table.lookup("a/b") == "slash"
    assert table.lookup("c/d") == "escaped"


@BOTH
def test_m_flag_anchors_at_lines(tmp_path, kind):
    flags = "m" if kind == "regexp" else "ms"    # pcre: s turns dotall off
    table, _ = table_from(tmp_path, kind, f"/^Subject: (.*)$/{flags} s=$1\n")
    assert table.lookup("From: x\nSubject: hello\nTo: y") == "s=hello"


@BOTH
def test_dollar_without_m_is_end_of_key(tmp_path, kind):
    table, _ = table_from(tmp_path, kind, "/^x: .*$/ header\n")
    assert table.lookup("x: one\n two") == "header"   # '.' crosses the newline
    if kind == "regexp":
        table2, _ = table_from(tmp_path, kind, "/a$/ end\n", "t2")
        assert table2.lookup("a\n") is None          # POSIX $ is the very end


@BOTH
def test_inline_rules(tmp_path, kind):
    table = open_table(kind + ":{ {/^a(.)/ first $1}, {!/^b/ not b} }")
    assert table.lookup("abc") == "first b"
    assert table.lookup("zzz") == "not b"
    assert table.lookup("bbb") is None


@BOTH
def test_inline_rule_errors_name_spec_and_rule_number(kind):
    spec = kind + ":{ {/a/ ok}, {/b/q x} }"
    with pytest.raises(ConfigError) as info:
        open_table(spec)
    assert str(info.value).startswith(spec + ":2: ")
    with pytest.raises(ConfigError) as info:
        open_table(kind + ":{ /a/ b }")
    assert "no '{' at start" in str(info.value)


@BOTH
@pytest.mark.parametrize("text, line, expected", [
    ("/a/ ok\n/b/q x\n", 2, 'unknown regexp option "q"'),
    ("/a/ ok\n\n/unterminated x\n", 3, 'no closing regexp delimiter "/"'),
    ("/a/ ok\n/(a/ x\n", 2, "bad regular expression"),
    ("/(a)/ $2\n", 1, 'out of range replacement index "2"'),
    ("/a/ $1\n", 1, 'out of range replacement index "1"'),
    ("!/(a)/ $1\n", 1, "$number found in negative match"),
    ("/(a)/ $x\n", 1, 'non-numeric replacement index "x"'),
    ("/(a)/ $1b\n", 1, 'non-numeric replacement index "1b"'),
    ("/(a)/ ${1\n", 1, "truncated macro reference"),
    ("/(a)/ x$\n", 1, "empty macro name"),
    ("/(a)/ $0\n", 1, 'out of range replacement index "0"'),
    ("/a/\n", 1, "missing result text"),
    ("if /a/\n/b/ c\n", 1, "if has no matching endif"),
    ("/a/ b\nendif\n", 2, "endif without matching if"),
    ("if /a/\n  /b/ c\nendif\n", 1, 'unexpected text after "if" pattern'),
    ("if /a/\n/b/ c\nendif extra\n", 3, "unexpected text after endif"),
    ("hello world\n", 1, "unrecognized request"),
    ("if\n", 1, "no pattern"),
])
def test_syntax_errors_name_file_and_line(tmp_path, kind, text, line, expected):
    path, message = error_from(tmp_path, kind, text)
    assert message.startswith(f"{path}:{line}: "), message
    assert expected in message


@BOTH
def test_missing_file(tmp_path, kind):
    path = str(tmp_path / "absent")
    with pytest.raises(ConfigError) as info:
        open_table(f"{kind}:{path}")
    assert str(info.value).startswith(f"{path}: cannot open {kind} table")


@BOTH
def test_empty_group_result_is_dropped_by_table_list(tmp_path, kind, caplog):
    from postclient.maps import open_tables
    path = tmp_path / "t"
    path.write_text("/^(a*)b/ $1\n")
    tables = open_tables(f"{kind}:{path}, static:fallback")
    assert tables.tables[0].lookup("b") == ""
    with caplog.at_level(logging.WARNING, "postclient.maps"):
        assert tables.lookup("b") is None
    assert "empty string result" in caplog.text
    assert tables.lookup("aab") == "aa"


@BOTH
def test_changed_when_file_rewritten(tmp_path, kind):
    table, path = table_from(tmp_path, kind, "/a/ b\n")
    assert not table.changed()
    with open(path, "a") as handle:
        handle.write("/c/ d\n")
    assert table.changed()


# -- regexp only: POSIX syntax --------------------------------------------------


def test_regexp_second_pattern(tmp_path):
    table, _ = table_from(tmp_path, "regexp", "/@example\\.com$/!/^postmaster@/ ok\n")
    assert table.lookup("bob@example.com") == "ok"
    assert table.lookup("postmaster@example.com") is None


def test_regexp_bracket_expressions(tmp_path):
    text = ("/^[[:digit:]]+$/ digits\n/^[]x]$/ bracket\n/^[a\\]$/ backslash\n"
            "/^[^]a-c]$/ negated\n/^[[:alpha:]_]+$/ word\n")
    table, _ = table_from(tmp_path, "regexp", text)
    assert table.lookup("0123") == "digits"
    assert table.lookup("]") == "bracket"
    assert table.lookup("z") == "negated"
    assert table.lookup("\\") == "backslash"
    assert table.lookup("Ab_c") == "word"
    assert table.lookup("b") == "word"       # a-c excluded from the negated set
    assert table.lookup("b-") is None


def test_regexp_x_flag_selects_basic_syntax(tmp_path):
    table, _ = table_from(tmp_path, "regexp",
                          "/^\\(ab\\)\\{2\\}+$/x bre $1\n/^(ab){2}$/ ere $1\n")
    assert table.lookup("abab+") == "bre ab"
    assert table.lookup("abab") == "ere ab"


def test_regexp_repeated_repetition_is_not_lazy(tmp_path):
    table, _ = table_from(tmp_path, "regexp", "/^(a+?)(a*)$/ [$1][$2]\n")
    # POSIX: (a+)? is optional-greedy, so group 1 takes every a.
    assert table.lookup("aaa") == "[aaa][]"


def test_regexp_m_flag_negated_bracket_stops_at_newline(tmp_path):
    table, _ = table_from(tmp_path, "regexp", "/^a[^x]b/m nl\n")
    assert table.lookup("a\nb") is None
    table2, _ = table_from(tmp_path, "regexp", "/^a[^x]b/ any\n", "t2")
    assert table2.lookup("a\nb") == "any"


@pytest.mark.parametrize("pattern, expected", [
    ("\\d+", "unsupported escape \\d"),
    ("a{x}", "invalid interval"),
    ("a{3,2}", "invalid interval"),
    ("*a", "repetition operator"),
    ("[[:nope:]]", "unknown character class"),
    ("[z-a]", "invalid range end"),
    ("[abc", "unmatched ["),
    ("(ab", "unmatched ("),
    ("a\\", "no closing regexp delimiter"),
])
def test_regexp_posix_errors(tmp_path, pattern, expected):
    path, message = error_from(tmp_path, "regexp", f"/ok/ fine\n/{pattern}/ x\n")
    assert message.startswith(f"{path}:2: ") and expected in message


def test_translate_posix_examples():
    assert translate_posix("a**") == "(?:a*)*"
    assert translate_posix("x|y$") == "x|y\\Z"
    assert translate_posix("x$", newline=True) == "x$"
    assert translate_posix("(a)|b)") == "(a)|b\\)"          # unmatched ) is literal
    assert translate_posix("a+?", extended=False) == "a\\+\\?"
    assert translate_posix("*a", extended=False) == "\\*a"
    assert re.fullmatch(translate_posix("\\<ab\\>"), "ab")


# -- pcre only ------------------------------------------------------------------


@pytest.mark.parametrize("flags, key, expected", [
    ("", "x\ny", "dotall"),            # s is on by default
    ("s", "x\ny", None),
    ("A", "zxy", None),                # anchored
    ("", "zx\ny", "dotall"),
])
def test_pcre_dotall_and_anchored_flags(tmp_path, flags, key, expected):
    table, _ = table_from(tmp_path, "pcre", f"/x.y/{flags} dotall\n")
    assert table.lookup(key) == expected


def test_pcre_x_flag_and_comments(tmp_path):
    table, _ = table_from(tmp_path, "pcre", "/ ^ a \\  b  # comment\n  $ /x spaced\n")
    assert table.lookup("a b") == "spaced"


def test_pcre_ungreedy_flag(tmp_path):
    table, _ = table_from(tmp_path, "pcre", "/^(a+)(a*)$/U [$1][$2]\n/^(b+?)(b*)$/U [$1][$2]\n")
    assert table.lookup("aaa") == "[a][aa]"
    assert table.lookup("bbb") == "[bbb][]"


def test_pcre_dollar_endonly_flag(tmp_path):
    table, _ = table_from(tmp_path, "pcre", "/a$/E end-only\n/b$/ lenient\n")
    assert table.lookup("a\n") is None
    assert table.lookup("b\n") == "lenient"


def test_pcre_obsolete_x_flag_warns(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, "postclient.maps"):
        table, path = table_from(tmp_path, "pcre", "/a/X extra\n")
    assert table.lookup("a") == "extra"
    assert f"{path}:1: ignoring obsolete regexp option" in caplog.text


def test_pcre_features(tmp_path):
    text = ("/^(?<user>[^@]+)@(?P<dom>.+)$/ ${2}/$1\n")
    table, _ = table_from(tmp_path, "pcre", text)
    assert table.lookup("joe@example.com") == "example.com/joe"
    table2, _ = table_from(tmp_path, "pcre", "/^\\d{3}\\Q.*\\E$/ quoted\n/a(?i)b|c/i mixed\n", "t2")
    assert table2.lookup("123.*") == "quoted"
    assert table2.lookup("aB") == "mixed"
    assert table2.lookup("C") == "mixed"
    assert table2.lookup("Ab") is None


def test_pcre_no_second_pattern(tmp_path):
    path, message = error_from(tmp_path, "pcre", "/a/!/b/ x\n")
    assert message.startswith(f"{path}:1: ") and 'unknown regexp option "!"' in message


@pytest.mark.parametrize("pattern", ["(?R)", "(*FAIL)", "a\\K", "(?|a)", "\\p{L}", "(?U)a",
                                     "[a[:^digit:]]"])
def test_pcre_unsupported_constructs_are_errors(tmp_path, pattern):
    path, message = error_from(tmp_path, "pcre", f"/{pattern}/ x\n")
    assert message.startswith(f"{path}:1: ") and "not supported" in message


def test_translate_pcre_examples():
    assert translate_pcre("a(?i)b|c") == "a(?i:b)|(?i:c)"
    assert translate_pcre("(?<n>x)\\k<n>") == "(?P<n>x)(?P=n)"
    assert translate_pcre("a+?b*", ungreedy=True) == "a+b*?"
    assert translate_pcre("x\\z") == "x\\Z"
    assert translate_pcre("a{,3}") == "a\\{,3}"
    assert re.fullmatch(translate_pcre("[[:^space:]]+"), "ab")
    assert re.fullmatch(translate_pcre("\\v"), "\r")
    assert not re.fullmatch(translate_pcre("\\v"), "v")


def test_parse_replacement():
    assert parse_replacement("a${1}b$(2)$$") == (["a", 1, "b", 2, "$"], 2)
    assert parse_replacement("$1 $12") == ([1, " ", 12], 12)
    assert parse_replacement("plain") == (["plain"], 0)
    with pytest.raises(ValueError):
        parse_replacement("$")
