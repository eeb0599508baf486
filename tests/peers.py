"""Finding the real peers (Postfix, Dovecot, dnsmasq ...) that tests talk to.

``need_program(name)`` returns the path of a program or skips the test with
a reason that starts with PEER_MISSING; under CI=true tests/conftest.py turns
exactly those skips into failures, because CI installs every peer and a
missing one means the suite did not test what it claims to.
"""

import os
import shutil

import pytest

PEER_MISSING = "real peer missing:"
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/lib/postfix/sbin",
                               "/usr/lib/dovecot"])


def in_ci():
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need_program(name):
    path = shutil.which(name, path=SEARCH_PATH)
    if path is None:
        pytest.skip(f"{PEER_MISSING} {name} (install it with: make test-deps, as root)")
    return path
