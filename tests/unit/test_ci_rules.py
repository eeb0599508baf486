"""Under CI=true a test skipped for a missing real peer fails; other skips stay skips."""

import pytest

TEST_FILE = """
import pytest
from tests.peers import need_program

def test_needs_a_peer():
    need_program("no-such-program-anywhere")

def test_skips_for_another_reason():
    pytest.skip("not applicable here")
"""


@pytest.mark.parametrize("ci, failed, skipped", [("true", 1, 1), ("", 0, 2)])
def test_missing_peer_is_a_failure_only_in_ci(pytester, monkeypatch, ci, failed, skipped):
    import os
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    monkeypatch.setenv("CI", ci)
    monkeypatch.syspath_prepend(root)
    pytester.makeconftest("pytest_plugins = []\nfrom tests.conftest import pytest_runtest_makereport\n")
    pytester.makepyfile(TEST_FILE)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=failed, skipped=skipped)
