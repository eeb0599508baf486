"""Suite-wide test rules.

Under CI=true a test skipped because a real peer is missing (see peers.py)
is reported as a failure: CI installs the peers, so such a skip would hide an
untested feature.  A compiled delivery agent module older than its source
stops the run before it starts (setup.py compiles them with mypyc).
"""

import os

import pytest

from tests.peers import PEER_MISSING, in_ci
from tests.stale_build import stale_modules


def pytest_sessionstart(session):
    """A module compiled before its source last changed would be what the tests
    run (an extension wins over the .py): stop at once and say so."""
    import postclient.smtp

    for built, source in stale_modules(os.path.dirname(postclient.smtp.__file__)):
        pytest.exit(f"{built} is older than {source}: run `make build`", returncode=3)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and in_ci():
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if PEER_MISSING in reason:
            report.outcome = "failed"
            report.longrepr = f"CI=true: {reason}"
