"""The ``postclient`` command: one entry point, Postfix-like subcommands.

Exports main(argv).  Every subcommand takes ``-c DIR`` (configuration
directory; else $POSTCLIENT_CONFIG_DIR, else /etc/postclient) and
``-o name=value`` (main.cf overrides), before or after its name.  Exit codes
follow sysexits: 64 usage, 69 unavailable, 75 temporary failure, 78
configuration error.

Subcommands live in their own modules and export ``add_arguments(parser)``
and ``run(args) -> int``; ``map`` hands its arguments to postmap.main() and
``sendmail`` (whose -o, -v and -c are sendmail's) to sendmail.main().
"""

import argparse
import importlib
import os
import sys

from ..config.errors import ConfigError
from .common import UsageError, fatal

# name: (module in postclient/cli, its attribute or None for the module itself, summary).
# A subcommand's module is imported only when it runs (command()): ``super -H``
# and ``queue -f`` should not pay for the master, submission and delivery code.
COMMANDS = {
    "conf": ("conf", None, "show and edit the configuration, like postconf(1)"),
    "check": ("check", None, "validate main.cf, master.cf and every lookup table they name"),
    "deliver": ("deliver", None, "deliver one message from standard input now, without the queue"),
    "init": ("init", None, "write a default main.cf and master.cf into the configuration directory"),
    "start": ("master", "start", "start the master as a daemon, like postfix start"),
    "start-fg": ("master", "start_fg", "run the master in the foreground (systemd, containers, make run)"),
    "stop": ("master", "stop", "stop the master; children finish their current client first"),
    "reload": ("master", "reload", "make the master re-read main.cf and master.cf"),
    "status": ("master", "status", "say whether the master runs (exit 0) or not (exit 1)"),
    "queue": ("queue", None, "list the mail queue (-p, -j) or flush it (-f, -s site), like postqueue(1)"),
    "super": ("super", None, "delete, hold, release or requeue queued mail, like postsuper(1)"),
    "cat": ("cat", None, "show a queue file: envelope, header and body, like postcat(1)"),
    "sendmail": ("sendmail", None, "submit a message from standard input, like sendmail(1)"),
}


def command(name):
    """The object with add_arguments() and run() of subcommand ``name``, imported now."""
    module_name, attribute, _ = COMMANDS[name]
    module = importlib.import_module(f"{__package__}.{module_name}")
    return getattr(module, attribute) if attribute else module


_columns = None


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, with the terminal's width asked for once.

    argparse makes a formatter for every add_argument() and asks for the
    width each time, importing shutil (and with it bz2, lzma and zlib) for
    that: a fifth of a queue tool's start-up, for help text it rarely shows.
    """

    def __init__(self, prog, indent_increment=2, max_help_position=24, width=None):
        global _columns
        if width is None:
            if _columns is None:
                try:
                    _columns = int(os.environ["COLUMNS"])
                except (KeyError, ValueError):
                    try:
                        _columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
                    except (AttributeError, ValueError, OSError):
                        _columns = 80
            width = _columns - 2
        super().__init__(prog, indent_increment, max_help_position, width)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise UsageError(f"{self.prog}: {message}")


def _common_options(parser, suppress_defaults):
    default = argparse.SUPPRESS if suppress_defaults else None
    parser.add_argument("-c", dest="config_dir", metavar="DIR", default=default,
                        help="configuration directory (default: $POSTCLIENT_CONFIG_DIR or /etc/postclient)")
    # Separate lists before and after the command name: argparse would let the
    # subcommand's list replace the main one; main() joins them.
    parser.add_argument("-o", dest="command_overrides" if suppress_defaults else "overrides",
                        metavar="NAME=VALUE", action="append", default=[],
                        help="override a main.cf parameter")
    parser.add_argument("-v", dest="verbose", action="store_true",
                        default=argparse.SUPPRESS if suppress_defaults else False,
                        help="verbose logging")


def build_parser(wanted=None):
    """The parser.  For a known subcommand ``wanted``, only that one (whose
    module is imported for its arguments): each subparser costs about a
    millisecond, and a queue tool's start-up is what an operator waits for.
    Otherwise every subcommand, with just its summary, for the help and the
    "invalid choice" message."""
    parser = _Parser(prog="postclient", description="postclient: outbound SMTP/LMTP relay")
    _common_options(parser, suppress_defaults=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (_, _, summary) in COMMANDS.items():
        if wanted in COMMANDS and name != wanted:
            continue
        sub = commands.add_parser(name, help=summary, description=summary, add_help=False)
        sub.add_argument("--help", action="help", help="show this help and exit")
        _common_options(sub, suppress_defaults=True)
        if name == wanted:
            command(name).add_arguments(sub)
    if wanted not in COMMANDS:
        commands.add_parser("map", help="build or query a lookup table, like postmap(1)", add_help=False)
    return parser


def _command_position(argv):
    """Index of the subcommand name: the first word that is not a global option or its value."""
    position = 0
    while position < len(argv):
        if argv[position] in ("-c", "-o"):
            position += 2
        elif argv[position].startswith("-"):
            position += 1
        else:
            return position
    return None


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if "map" in argv:
        # postmap's options (-q, -i ...) are its own: pass everything after "map".
        position = argv.index("map")
        if all(arg.startswith("-") or argv[i - 1] in ("-c", "-o") for i, arg in enumerate(argv[:position])):
            from ..maps import postmap
            return postmap.main(argv[position + 1:])
    position = _command_position(argv)
    name = argv[position] if position is not None else None
    if name == "sendmail":
        return command(name).main(argv[position + 1:], argv[:position])
    parser = build_parser(name)
    try:
        args = parser.parse_args(argv)
    except UsageError as error:
        print(error, file=sys.stderr)
        return os.EX_USAGE
    if not args.command:
        parser.print_help(sys.stderr)
        return os.EX_USAGE
    args.overrides = list(args.overrides) + list(getattr(args, "command_overrides", []))
    try:
        return command(args.command).run(args)
    except ConfigError as error:
        fatal(args.command, str(error))
        return os.EX_CONFIG
    except UsageError as error:
        print(error, file=sys.stderr)
        return os.EX_USAGE
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
