"""inline:, static:, texthash:, the opener and TableList (postclient.maps)."""

import logging
import time

import pytest

from postclient.config.errors import ConfigError
from postclient.maps import open_table, open_tables, split_specs, validate_spec, validate_tables
from postclient.maps.source import logical_lines


def write(tmp_path, name, text, mode="w"):
    path = tmp_path / name
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(path)


def error_of(spec):
    with pytest.raises(ConfigError) as info:
        open_table(spec)
    return str(info.value)


# -- logical lines -------------------------------------------------------------


def test_logical_lines_comments_blank_and_continuation(tmp_path):
    path = write(tmp_path, "t", "# c\n\none two\n   three\n# in between\n\tfour\nfive\n  \n")
    assert list(logical_lines(path, "texthash")) == [(3, "one two   three\tfour"), (7, "five")]


def test_logical_lines_indented_first_line_is_skipped_with_warning(tmp_path, caplog):
    path = write(tmp_path, "t", "  orphan\nkey value\n")
    with caplog.at_level(logging.WARNING, "postclient.maps"):
        assert list(logical_lines(path, "texthash")) == [(2, "key value")]
    assert f"{path}:1: logical line must not start with whitespace" in caplog.text


def test_logical_lines_keep_carriage_return_out_of_values(tmp_path):
    path = write(tmp_path, "t", b"key value\r\nother x\r\n", "wb")
    assert list(logical_lines(path, "texthash")) == [(1, "key value"), (2, "other x")]


# -- inline ---------------------------------------------------------------------


def test_inline_simple_and_case_folded():
    table = open_table("inline:{a=1, B=2 c=3}")
    assert (table.lookup("a"), table.lookup("b"), table.lookup("C")) == ("1", "2", "3")
    assert table.lookup("d") is None
    assert (table.kind, table.fixed_keys, table.spec) == ("inline", True, "inline:{a=1, B=2 c=3}")


def test_inline_braced_elements_keep_commas_and_spaces():
    table = open_table("inline:{ { key = value with, commas }, x=y, {\"q k\" = v} }")
    assert table.lookup("key") == "value with, commas"
    assert table.lookup("x") == "y"
    assert table.lookup('"q k"') == "v"


def test_inline_duplicate_keeps_last():
    assert open_table("inline:{a=1, A=2}").lookup("a") == "2"


@pytest.mark.parametrize("spec, expected", [
    ("inline:a=b", "bad syntax"),
    ("inline:{}", "bad syntax"),
    ("inline:{a=b", "bad syntax"),
    ("inline:{a=b}x", "bad syntax"),
    ("inline:{ , }", "empty table"),
    ("inline:{a}", "missing '='"),
    ("inline:{=b}", "missing attribute name"),
    ("inline:{a=}", "empty value"),
    ("inline:{{a=b}x}", "syntax error after '}'"),
])
def test_inline_errors_name_the_spec(spec, expected):
    message = error_of(spec)
    assert message.startswith(spec + ": ")
    assert expected in message


# -- static ---------------------------------------------------------------------


def test_static_returns_value_for_any_key():
    table = open_table("static:OK")
    assert table.lookup("anything") == "OK" and table.lookup("") == "OK"
    assert table.fixed_keys


def test_static_braces_allow_spaces_and_commas():
    assert open_table("static:{ relay, with spaces }").lookup("x") == "relay, with spaces"


@pytest.mark.parametrize("spec", ["static:", "static:{}", "static:{ x", "static:{x}y"])
def test_static_errors(spec):
    assert error_of(spec).startswith(spec + ": ")


# -- texthash -------------------------------------------------------------------


def test_texthash_entries_folding_and_continuations(tmp_path):
    path = write(tmp_path, "map", "# comment\nUser@Example.COM  value one\n"
                                  "  continued\n\n@example.com\tcatch all  \n")
    table = open_table(f"texthash:{path}")
    assert table.lookup("user@example.com") == "value one  continued"
    assert table.lookup("USER@EXAMPLE.com") == "value one  continued"
    assert table.lookup("@Example.com") == "catch all"
    assert table.lookup("nobody@example.com") is None
    assert (table.kind, table.fixed_keys) == ("texthash", True)


def test_texthash_quoted_key_keeps_quotes_and_spaces(tmp_path):
    path = write(tmp_path, "map", '"john doe"@example.com  jd\n"a\\"b" c\n')
    table = open_table(f"texthash:{path}")
    assert table.lookup('"John Doe"@example.com') == "jd"
    assert table.lookup('"a\\"b"') == "c"


def test_texthash_duplicate_warns_and_first_wins(tmp_path, caplog):
    path = write(tmp_path, "map", "a first\nb x\nA second\n")
    with caplog.at_level(logging.WARNING, "postclient.maps"):
        table = open_table(f"texthash:{path}")
    assert table.lookup("a") == "first"
    assert f'{path}:3: duplicate entry: "a"' in caplog.text


def test_texthash_eight_bit_bytes_survive(tmp_path):
    path = write(tmp_path, "map", b"caf\xc3\xa9 utf8\nraw\xff bytes\xfe\n", "wb")
    table = open_table(f"texthash:{path}")
    assert table.lookup("CAF\u00c9") == "utf8"
    assert table.lookup("raw\udcff") == "bytes\udcfe"


@pytest.mark.parametrize("text, line, expected", [
    ("good value\nlonely\n", 2, "expected format: key whitespace value"),
    ('ok v\n\n"open quote value\n', 3, "unbalanced"),
])
def test_texthash_syntax_errors_name_file_and_line(tmp_path, text, line, expected):
    path = write(tmp_path, "map", text)
    message = error_of(f"texthash:{path}")
    assert f"{path}:{line}: " in message and expected in message


def test_texthash_alias_format_warns(tmp_path, caplog):
    path = write(tmp_path, "map", "postmaster: root\n")
    with caplog.at_level(logging.WARNING, "postclient.maps"):
        open_table(f"texthash:{path}")
    assert f"{path}:1: record is in \"key: value\" format" in caplog.text


def test_texthash_missing_file(tmp_path):
    path = str(tmp_path / "absent")
    message = error_of(f"texthash:{path}")
    assert message.startswith(f"{path}: cannot open texthash table")


def test_texthash_changed_after_rewrite(tmp_path):
    path = write(tmp_path, "map", "a b\n")
    table = open_table(f"texthash:{path}")
    assert not table.changed()
    time.sleep(0.01)
    write(tmp_path, "map", "a c\n")
    assert table.changed()


def test_big_texthash_is_read_quickly(tmp_path):
    lines = "".join(f"user{i}@example.com value{i}\n" for i in range(100_000))
    path = write(tmp_path, "big", lines)
    started = time.monotonic()
    table = open_table(f"texthash:{path}")
    assert time.monotonic() - started < 5
    assert table.lookup("USER99999@example.com") == "value99999"


# -- opening --------------------------------------------------------------------


@pytest.mark.parametrize("spec, expected", [
    ("nosuchtype:/x", 'unsupported lookup table type "nosuchtype"'),
    ("just-a-file", 'expected a lookup table as "type:name"'),
    (":x", 'expected a lookup table as "type:name"'),
    ("hash:", 'missing table name after "hash:"'),
])
def test_bad_specs_name_the_spec(spec, expected):
    message = error_of(spec)
    assert message.startswith(spec + ": ") and expected in message


def test_proxy_prefix_is_transparent():
    table = open_table("proxy:inline:{a=b}")
    assert table.lookup("a") == "b" and table.kind == "inline"
    assert table.spec == "proxy:inline:{a=b}"


def test_validate_spec(tmp_path):
    validate_spec("inline:{a=b}")
    with pytest.raises(ConfigError):
        validate_spec(f"regexp:{tmp_path / 'absent'}")
    validate_tables("static:x, inline:{a=b}")
    with pytest.raises(ConfigError):
        validate_tables("static:x, bogus:y")


# -- lists ----------------------------------------------------------------------


def test_split_specs_respects_braces():
    value = "hash:/etc/a, regexp:/etc/b\tinline:{ a=b, c=d }  ,static:{x y}"
    assert split_specs(value) == ["hash:/etc/a", "regexp:/etc/b", "inline:{ a=b, c=d }",
                                  "static:{x y}"]


def test_table_list_first_match_wins_in_order():
    tables = open_tables("inline:{a=first}, inline:{a=second, b=only}, static:fallback")
    assert [table.kind for table in tables.tables] == ["inline", "inline", "static"]
    assert tables.lookup("a") == "first"
    assert tables.lookup("b") == "only"
    assert tables.lookup("zzz") == "fallback"
    reordered = open_tables("static:fallback, inline:{a=first}")
    assert reordered.lookup("a") == "fallback"


def test_table_list_from_list_of_specs():
    tables = open_tables(["inline:{a=1}", "static:2"])
    assert len(tables) == 2 and tables.lookup("x") == "2"


def test_empty_table_list_finds_nothing():
    tables = open_tables("")
    assert tables.tables == () and not tables
    assert tables.lookup("anything") is None
    assert open_tables("  ,  ").lookup("x") is None


def test_table_list_empty_key_finds_nothing():
    assert open_tables("static:x").lookup("") is None


def test_table_list_fixed_only_skips_pattern_tables():
    tables = open_tables("pcre:{ {/^a/ pattern} }, inline:{a=exact}")
    assert tables.lookup("a") == "pattern"
    assert tables.lookup("a", fixed_only=True) == "exact"


def test_table_list_error_names_the_bad_table():
    with pytest.raises(ConfigError) as info:
        open_tables("inline:{a=b}, bogus:x")
    assert str(info.value).startswith("bogus:x: ")
