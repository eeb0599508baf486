"""Suite-wide test rules.

Under CI=true a test skipped because a real peer is missing (see peers.py)
is reported as a failure: CI installs the peers, so such a skip would hide an
untested feature.
"""

import pytest

from tests.peers import PEER_MISSING, in_ci


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and in_ci():
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if PEER_MISSING in reason:
            report.outcome = "failed"
            report.longrepr = f"CI=true: {reason}"
