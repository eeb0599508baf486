"""Helpers shared by the subcommands: usage errors, warnings, loading main.cf.

Exports UsageError, warn(), fatal() and load_config().
"""

import sys

from ..config.config import Config


class UsageError(Exception):
    """Bad command-line usage; main() prints the message and exits 64."""


def warn(command, text):
    print(f"postclient/{command}: warning: {text}", file=sys.stderr)


def fatal(command, text):
    print(f"postclient/{command}: fatal: {text}", file=sys.stderr)


def load_config(args, command, require_main_cf=True):
    """main.cf of ``-c DIR`` with ``-o`` overrides; warnings go to stderr."""
    config = Config.load(getattr(args, "config_dir", None), getattr(args, "overrides", None) or (),
                         process_name=command, require_main_cf=require_main_cf)
    for warning in config.warnings:
        warn(command, str(warning))
    return config
