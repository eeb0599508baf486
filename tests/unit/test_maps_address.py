"""Postfix's address lookup order (postclient.maps.address)."""

import pytest

from postclient.maps import Table, TableList, open_tables
from postclient.maps.address import lookup_address, strip_extension


class Recorder(Table):
    """A table that records every key it is asked for and finds nothing."""

    def __init__(self, fixed_keys, answers=None):
        super().__init__("recorder:")
        self.kind = "recorder"
        self.fixed_keys = fixed_keys
        self.answers = answers or {}
        self.keys = []

    def lookup(self, key):
        self.keys.append(key)
        return self.answers.get(key)


def test_full_order_with_extension_and_local_domain():
    fixed = Recorder(True)
    pattern = Recorder(False)
    result = lookup_address(TableList([pattern, fixed]), "User+Ext@Example.COM",
                            local_domains=["example.com"], recipient_delimiter="+")
    assert result is None
    assert pattern.keys == ["User+Ext@example.com"]
    assert fixed.keys == ["User+Ext@example.com", "User@example.com", "User+Ext", "User",
                          "@example.com"]


def test_non_local_domain_skips_localpart_lookups():
    fixed = Recorder(True)
    lookup_address(TableList([fixed]), "user+ext@example.net",
                   local_domains=["example.com"], recipient_delimiter="+")
    assert fixed.keys == ["user+ext@example.net", "user@example.net", "@example.net"]


def test_without_delimiter_no_extension_stripping():
    fixed = Recorder(True)
    lookup_address(TableList([fixed]), "user+ext@example.com", local_domains=["example.com"])
    assert fixed.keys == ["user+ext@example.com", "user+ext", "@example.com"]


def test_callable_local_domains_and_bare_localpart():
    fixed = Recorder(True)
    lookup_address(TableList([fixed]), "a-b@LOCAL.test", recipient_delimiter="-",
                   local_domains=lambda domain: domain == "local.test")
    assert fixed.keys == ["a-b@local.test", "a@local.test", "a-b", "a", "@local.test"]
    listed = Recorder(True)
    lookup_address(TableList([listed]), "u@b.test", local_domains="a.test, B.test")
    assert listed.keys == ["u@b.test", "u", "@b.test"]
    bare = Recorder(True)
    lookup_address(TableList([bare]), "joe+x", recipient_delimiter="+")
    assert bare.keys == ["joe+x", "joe"]


def test_step_results_and_priority():
    tables = open_tables("inline:{ user@example.com=bare, @example.com=domain,"
                         " user=local, user+ext@example.com=full }")
    find = lambda address, **kw: lookup_address(tables, address, recipient_delimiter="+", **kw)
    assert find("user+ext@example.com") == "full"
    assert find("USER+other@Example.com") == "bare"
    assert find("someone@example.com") == "domain"
    assert find("user@elsewhere.test", local_domains=["elsewhere.test"]) == "local"
    assert find("user@elsewhere.test") is None


def test_first_table_wins_within_a_step_and_steps_span_all_tables():
    tables = open_tables("inline:{@example.com=first-domain}, inline:{u@example.com=second-full}")
    assert lookup_address(tables, "u@example.com") == "second-full"


def test_pattern_tables_only_see_the_full_address():
    tables = open_tables("pcre:{ {/^user$/ partial-match}, {/@example\\.com$/ full} },"
                         " inline:{@example.com=domain}")
    assert lookup_address(tables, "user@example.com") == "full"
    only_partial = open_tables("pcre:{ {/^user$/ partial-match} }")
    assert lookup_address(only_partial, "user@local.test", local_domains=["local.test"]) is None
    domain_pattern = open_tables("regexp:{ {/^@example\\.com$/ at-domain} }")
    assert lookup_address(domain_pattern, "x@example.com") is None


def test_domain_is_lowercased_for_pattern_tables_but_localpart_kept():
    tables = open_tables("regexp:{ {/^User@example\\.com$/i exact-case} }")
    assert lookup_address(tables, "User@EXAMPLE.com") == "exact-case"
    assert lookup_address(tables, "user@EXAMPLE.com") is None


@pytest.mark.parametrize("address", ["", "<>"])
def test_null_address_is_never_looked_up(address):
    fixed = Recorder(True)
    assert lookup_address(TableList([fixed, Recorder(False)]), address) is None
    assert fixed.keys == []


def test_last_at_sign_splits_domain():
    fixed = Recorder(True)
    lookup_address(TableList([fixed]), '"a@b"@Example.org')
    assert fixed.keys == ['"a@b"@example.org', "@example.org"]


@pytest.mark.parametrize("localpart, delimiters, expected", [
    ("user+ext", "+", "user"),
    ("user+a+b", "+", "user"),
    ("user-ext+x", "+-", "user"),
    ("+ext", "+", None),
    ("user", "+", None),
    ("user+ext", "", None),
    ("postmaster+x", "+", "postmaster"),
    ("MAILER-DAEMON", "-", None),
    ("double-bounce", "-", None),
    ("owner-list", "-", None),
    ("list-request", "-", None),
    ("owner-list+x", "+", "owner-list"),
])
def test_strip_extension(localpart, delimiters, expected):
    assert strip_extension(localpart, delimiters) == expected


def test_extension_not_stripped_for_reserved_names():
    fixed = Recorder(True)
    lookup_address(TableList([fixed]), "Mailer-Daemon@example.com", recipient_delimiter="-")
    assert fixed.keys == ["Mailer-Daemon@example.com", "@example.com"]
