"""``postclient sendmail``: the sendmail(1)-compatible way to submit a message.

  postclient [-c DIR] [-o NAME=VALUE] sendmail [options] [recipient ...]

Exports main(argv, global_args=()), add_arguments(), run() and parse_options().
Reads queue_directory, myhostname, myorigin, mail_name, message_size_limit,
hopcount_limit, maillog_file, syslog_name and syslog_facility.

The message is read from standard input; its recipients come from the
arguments and, with -t, from its To/Cc/Bcc headers.  Options follow Postfix's
sendmail(1) (getopt with POSIX ordering: options end at the first recipient
or at ``--``); main.cf comes from ``-c DIR`` (or ``-C DIR|FILE``), else
$POSTCLIENT_CONFIG_DIR, else /etc/postclient.  postclient/queue/submit.py does
the work on addresses and headers; this module handles options, standard
input, errors and exit codes.  See docs/sendmail.md.

The message is written as one queue file into incoming/ (or maildrop/ for a
user who may not write incoming/, picked up by the pickup service), and the
queue manager (or pickup) is woken through its public socket.  Exit status 0
means the queue file is on disk under its final name and fsynced; on any
error nothing that can be delivered is left behind (a temporary ".name" file
at worst, which nothing delivers).  Exit codes (sysexits, as Postfix):
64 usage (options, no recipients, malformed or unsafe argument addresses),
65 data (malformed addresses in headers with -t, unreadable input),
69 unavailable (message file too big, too many hops), 71 no login name for
the user, 75 temporary (the queue cannot be written), 78 configuration.
"""

import argparse
import logging
import os
import pwd
import signal
import sys
import time

from .. import log
from ..config.config import Config, parse_override
from ..config.errors import ConfigError
from ..queue import queuefile, submit
from ..queue.qid import new_queue_id
from ..queue.submit import AddressError, SubmitError

PROG = "postclient/sendmail"
EX_CONFIG = 78
WITH_ARGUMENT = set("ABCFLNORVXbcefhopqr")
WITHOUT_ARGUMENT = set("GIUimntvx")
IGNORED = set("ALOehpGUmx")      # accepted and ignored, as Postfix does


USAGE = """usage: postclient [-c DIR] [-o NAME=VALUE] sendmail [options] [recipient ...]
  -f SENDER, -r SENDER  envelope sender (default: your login name @$myorigin; "<>" for none)
  -F NAME               full name for an added From: header (default: $NAME, else GECOS)
  -t                    also take recipients from To:, Cc: and Bcc: (Bcc: is removed)
  -i, -oi               a line with a single "." does not end the message
  -N NOTIFY             DSN: never, or a list of success, delay, failure
  -R full|hdrs          DSN RET: what a bounce returns
  -V ENVID              DSN envelope ID
  -B 7BIT|8BITMIME      body type (default: detected from the content)
  -c DIR, -C DIR|FILE   configuration directory (or its main.cf)
  -bm                   read a message and queue it (the default)
  -bp, -q, -qRSITE      the same as postclient queue -p, -f, -s SITE
Ignored for compatibility: -Ac -Am -G -h N -L X -m -O X -o X -U -v -x -e X -p X -bh -bH -qINTERVAL.
See docs/sendmail.md."""


class Usage(Exception):
    """Bad command line: exit 64 with this text."""


class Options:
    def __init__(self):
        self.mode = "enqueue"         # enqueue, mailq, flush, ignore, exit
        self.config_dir = None
        self.overrides = []
        self.verbose = 0
        self.sender = None            # -f/-r text, None = the invoking user
        self.full_name = None
        self.dot_ends = True
        self.extract = False
        self.notify = ""
        self.ret = ""
        self.envid = ""
        self.encoding = None
        self.flush_site = None
        self.recipients = []


# --- options -----------------------------------------------------------------------------
def _global_options(options, args):
    """The options given before the word "sendmail": -c DIR, -o NAME=VALUE, -v."""
    position = 0
    while position < len(args):
        arg = args[position]
        if arg in ("-c", "-o") and position + 1 < len(args):
            if arg == "-c":
                options.config_dir = args[position + 1]
            else:
                options.overrides.append(args[position + 1])
            position += 2
        elif arg == "-v":
            options.verbose += 1
            position += 1
        else:
            raise Usage(f"unexpected {arg!r} before sendmail (expected -c DIR, -o NAME=VALUE or -v)")


def parse_options(argv, global_args=()):
    """Options from ``argv`` (after "sendmail"); Usage for a bad command line."""
    options = Options()
    _global_options(options, list(global_args))
    position = 0
    while position < len(argv):
        arg = argv[position]
        if arg == "--":
            position += 1
            break
        if arg == "-q":                  # not getopt compatible: -q alone flushes
            _set_mode(options, "flush")
            position += 1
            continue
        if not arg.startswith("-") or arg == "-":
            break
        index = 1
        while index < len(arg):
            letter = arg[index]
            if letter in WITH_ARGUMENT:
                value = arg[index + 1:]
                if not value:
                    position += 1
                    if position >= len(argv):
                        raise Usage(f"option requires an argument -- {letter}")
                    value = argv[position]
                _option(options, letter, value)
                break
            if letter in WITHOUT_ARGUMENT:
                _option(options, letter, None)
                index += 1
                continue
            raise Usage(f"invalid option -- {letter!r}")
        position += 1
    options.recipients = list(argv[position:])
    if options.extract and options.mode != "enqueue":
        raise Usage("-t can be used only in delivery mode")
    if options.mode in ("mailq", "flush") and options.recipients:
        raise Usage(f"{'display' if options.mode == 'mailq' else 'flush'} queue mode requires no recipient")
    return options


def _set_mode(options, mode):
    if options.mode != "exit":       # -q<interval> wins: Postfix then exits at once
        options.mode = mode


def _option(options, letter, value):
    try:
        _apply(options, letter, value)
    except ValueError as error:
        raise Usage(str(error)) from None


def _apply(options, letter, value):
    if letter in IGNORED:
        return
    if letter == "B":
        options.encoding = submit.encoding_value(value)
    elif letter == "C":
        main_cf = os.path.basename(value) == "main.cf"
        options.config_dir = (os.path.dirname(value) or ".") if main_cf else value
    elif letter == "c":
        options.config_dir = value
    elif letter == "F":
        options.full_name = submit.check_text(value, "-F full name")
    elif letter in "fr":
        submit.check_text(value, f"-{letter} sender")
        options.sender = value
    elif letter == "N":
        options.notify = submit.notify_value(value)
    elif letter == "R":
        options.ret = submit.ret_value(value)
    elif letter == "V":
        options.envid = submit.envid_value(value)
    elif letter == "X":
        if value.startswith("V"):
            raise ValueError("-XV (VERP) is not supported by postclient")
        raise ValueError(f"unsupported: -X{value[:1]}")
    elif letter == "b":
        _mode_option(options, value)
    elif letter == "o":
        if value.startswith("i"):
            options.dot_ends = False          # -oi; every other -oX is ignored
    elif letter == "q":
        if value[:1].isdigit():
            options.mode = "exit"             # -q30m: a queue run interval, ignored
        elif value.startswith("R") and value[1:]:
            options.flush_site = value[1:]
            _set_mode(options, "flush")
        elif value.startswith("R"):
            raise ValueError("specify: -qRsitename")
        else:
            raise ValueError(f"-q{value[:1]} is not implemented")
    elif letter == "I":
        raise ValueError("-I (newaliases): postclient has no alias database")
    elif letter == "i":
        options.dot_ends = False
    elif letter == "n":
        raise ValueError("-n option not supported")
    elif letter == "t":
        options.extract = True
    elif letter == "v":
        options.verbose += 1


def _mode_option(options, value):
    kind = value[:1]
    if kind == "m":
        _set_mode(options, "enqueue")
    elif kind == "p":
        _set_mode(options, "mailq")
    elif kind in ("h", "H"):
        _set_mode(options, "ignore")          # no host status database: nothing to do
    elif kind in ("d", "s", "i", "v"):
        names = {"d": "daemon mode (use postclient start)", "s": "stand-alone SMTP mode",
                 "i": "alias database initialisation", "v": "address verification"}
        raise ValueError(f"-b{kind}: {names[kind]} is not supported by postclient")
    else:
        raise ValueError(f"unsupported: -b{kind}")


# --- entry points ------------------------------------------------------------------------
def add_arguments(parser):
    parser.add_argument("arguments", nargs=argparse.REMAINDER, metavar="ARGUMENTS",
                        help="sendmail options and recipients (see docs/sendmail.md)")


def run(args):
    global_args = []
    if getattr(args, "config_dir", None):
        global_args += ["-c", args.config_dir]
    for override in getattr(args, "overrides", None) or []:
        global_args += ["-o", override]
    if getattr(args, "verbose", False):
        global_args.append("-v")
    return main(args.arguments, global_args)


def main(argv, global_args=()):
    """Run ``postclient sendmail`` with ``argv`` (the arguments after "sendmail")."""
    if list(argv[:1]) == ["--help"]:
        print(USAGE)
        return 0
    try:
        options = parse_options(list(argv), global_args)
    except Usage as error:
        _fatal(None, str(error))
        return submit.EX_USAGE
    if options.mode == "exit" or options.mode == "ignore":
        return 0
    if options.mode in ("mailq", "flush"):
        return _queue_command(options)
    previous = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGHUP, _interrupted)
    try:
        return _enqueue(options)
    except KeyboardInterrupt:
        _fatal(None, "interrupted -- nothing was queued")
        return submit.EX_TEMPFAIL
    finally:
        for number, handler in previous.items():
            if handler is not None:
                signal.signal(number, handler)


def _interrupted(signum, frame):
    raise KeyboardInterrupt()


def _noted(signum, frame):
    """A signal while the queue file is written: the write finishes first."""


def _queue_command(options):
    """-bp and -q[Rsite] are `postclient queue` (when this version has it)."""
    from . import main as cli_main
    if "queue" not in cli_main.COMMANDS:
        _fatal(None, "-bp and -q need `postclient queue`, which this version does not have")
        return submit.EX_USAGE
    args = []
    if options.config_dir:
        args += ["-c", options.config_dir]
    for override in options.overrides:
        args += ["-o", override]
    args.append("queue")
    if options.mode == "mailq":
        args.append("-p")
    elif options.flush_site:
        args += ["-s", options.flush_site]
    else:
        args.append("-f")
    return cli_main.main(args)


# --- submission --------------------------------------------------------------------------
def _fatal(who, text, logged=False):
    where = f"{who}: " if who else ""
    print(f"{PROG}: fatal: {where}{text}", file=sys.stderr)
    if logged:
        log_text = f"{where}{text}"
        logging.getLogger(log.LOGGER_NAME).critical(log_text)


def _setup_logging(config, verbose):
    """Log like the daemons; fall back to syslog where maillog_file is not for us.

    An unprivileged user cannot append to the daemons' maillog_file, and
    /dev/stdout or /dev/stderr would be the caller's own streams, so those
    lines go to syslog instead.
    """
    without_file = config.with_overrides([parse_override("maillog_file=")])
    maillog_file = config.get("maillog_file")
    if maillog_file in ("/dev/stdout", "/dev/stderr", "-"):
        config = without_file
    try:
        log.setup_logging(config, "sendmail", verbose=verbose > 1)
    except ConfigError:
        log.setup_logging(without_file, "sendmail", verbose=verbose > 1)


def _login_name(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _default_full_name(uid, user):
    """$NAME, else the first GECOS field ("&" is the capitalised login name)."""
    name = os.environ.get("NAME")
    if name is None:
        try:
            gecos = pwd.getpwuid(uid).pw_gecos.split(",")[0]
        except KeyError:
            return ""
        name = gecos.replace("&", (user or "").capitalize())
    try:
        return submit.check_text(name.strip(), "full name")
    except AddressError:
        return ""     # not the user's explicit choice: leave it out rather than refuse


def _read_input(dot_ends, limit):
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:
        return b""
    try:
        return submit.read_message(stream, dot_ends=dot_ends, limit=limit)
    except OSError as error:
        raise SubmitError(submit.EX_DATAERR, f"error reading input: {error.strerror or error}") from None


def _enqueue(options):
    try:
        config = Config.load(options.config_dir, options.overrides, process_name="sendmail")
        for warning in config.warnings:
            print(f"{PROG}: warning: {warning}", file=sys.stderr)
        _setup_logging(config, options.verbose)
        settings = {name: config.get(name) for name in (
            "queue_directory", "myhostname", "myorigin", "mail_name", "message_size_limit",
            "hopcount_limit")}
    except ConfigError as error:
        _fatal(None, str(error))
        return EX_CONFIG
    uid = os.getuid()
    user = _login_name(uid)
    who = f"{user or 'uid'}({uid})"
    try:
        queue_id, path, queue_name, message_id = _submit(options, settings, uid, user)
    except SubmitError as error:
        _fatal(who, str(error), logged=True)
        return error.status
    logger = logging.getLogger(log.LOGGER_NAME)
    shown = "".join(c if c.isprintable() else "?" for c in message_id[1][:500])
    logger.info("%s: %s=%s", queue_id, message_id[0], shown)
    service = "qmgr" if queue_name == "incoming" else "pickup"
    if not submit.wake(settings["queue_directory"], service):
        logger.debug("%s: %s not running; the message waits in %s/", queue_id, service, queue_name)
    return 0


def _submit(options, settings, uid, user):
    myorigin = settings["myorigin"]
    limit = settings["message_size_limit"]
    try:
        if options.sender is not None:
            sender = submit.qualify(submit.parse_sender(options.sender), myorigin)
        elif user is None:
            raise SubmitError(submit.EX_OSERR, f"no login name found for user ID {uid} (use -f)")
        else:
            sender = f"{user}@{myorigin}"
    except AddressError as error:
        raise SubmitError(submit.EX_USAGE, f"malformed -f sender {options.sender!r}: {error}") from None
    recipients = []
    for argument in options.recipients:
        try:
            for address in submit.parse_addresses(argument):
                recipients.append((submit.qualify(address, myorigin), address.internal()))
        except AddressError as error:
            raise SubmitError(submit.EX_USAGE, f"malformed recipient {argument!r}: {error}") from None
    if not recipients and not options.extract:
        raise SubmitError(submit.EX_USAGE, "Recipient addresses must be specified on the "
                                           "command line or via the -t option")
    content = _read_input(options.dot_ends, limit)
    queue_id = new_queue_id()
    full_name = options.full_name if options.full_name is not None else _default_full_name(uid, user)
    if not sender:
        full_name = ""           # From: MAILER-DAEMON@$myorigin, as Postfix's cleanup writes it
    prepared = submit.prepare_content(
        content, queue_id=queue_id, uid=uid, myhostname=settings["myhostname"], myorigin=myorigin,
        mail_name=settings["mail_name"], from_address=sender or f"MAILER-DAEMON@{myorigin}",
        full_name=full_name, extract=options.extract, hopcount_limit=settings["hopcount_limit"])
    recipients = submit.dedupe(recipients + prepared.header_recipients)
    if not recipients:
        raise SubmitError(submit.EX_USAGE, "No recipient addresses found in message header")
    if limit and len(prepared.content) > limit:
        raise submit.MessageTooBig()
    addresses = [address for address, _ in recipients]
    fields = dict(
        sender=sender, content=prepared.content, arrival_time=time.time(),
        recipients=[queuefile.QueuedRecipient(address, original, "", options.notify)
                    for address, original in recipients],
        envid=options.envid, ret=options.ret,
        encoding=submit.body_encoding(prepared.content, options.encoding),
        smtputf8=submit.needs_smtputf8(sender, addresses))
    # A signal now would only cost the temporary file: let the write finish
    # first, and once the file is queued (or was never written) a late signal
    # changes nothing.
    for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(number, _noted)
    try:
        path, queue_name = submit.enqueue(settings["queue_directory"], queue_id, **fields)
    finally:
        for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(number, signal.SIG_IGN)
    return queue_id, path, queue_name, (prepared.message_id_name, prepared.message_id)
