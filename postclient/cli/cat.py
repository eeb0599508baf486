"""``postclient cat``: show a queue file in human-readable form, like postcat(1).

Exports add_arguments(), run() and show().  Reads queue_directory (only to
look an ID up in the queue).

  postclient cat [-e] [-h] [-b] [-q] ID|FILE ...

An argument that is a valid queue ID is looked up in the queue (maildrop,
incoming, active, deferred, hold, then corrupt) and shown under its
relative name ("deferred/ID"), as ``postcat -q`` does; ``-q`` insists on
that.  Anything else is a file name.  Without -e, -h or -b everything is
shown, as with ``-ehb``:

  *** ENVELOPE RECORDS deferred/ID ***        (-e)
  message_size:   <content bytes> <content offset> <recipients>
  message_arrival_time: Sat Nov 21 20:15:35 2020
  sender: ...                                  and the other envelope records
  named_attribute: envelope_id=...             (encoding, smtputf8, ret_flags,
  dsn_original_recipient / dsn_notify_flags     client attributes) in file order;
  original_recipient / recipient or done_recipient   per recipient
  *** MESSAGE CONTENTS deferred/ID ***        (-e)
  <header lines>                               (-h: up to the first non-header line)
  <body>                                       (-b: from that line to the end)
  *** HEADER EXTRACTED deferred/ID ***        (-e)
  *** MESSAGE FILE END deferred/ID ***        (-e)

Record names are Postfix's; values are printed as stored.  A corrupt file
is shown as far as it can be read, then the reason goes to standard error.

Exit statuses: 0 every file shown; 1 a file is corrupt (shown as far as
possible); 64 bad usage (-q with something that is not a queue ID); 66
(EX_NOINPUT) no such message or file, or it cannot be read; 78
configuration error.  With several arguments, each is shown and the first
failure's status is returned.
"""

import os
import re
import sys
import time

from ..queue import manage, queuefile
from ..queue.qid import valid_queue_id
from .common import UsageError, load_config, printable

COMMAND = "cat"
PREFIX = f"postclient/{COMMAND}"
EX_CORRUPT = 1
CHUNK = 64 * 1024
_HEADER_LINE = re.compile(rb"^[\x21-\x39\x3b-\x7e]+[ \t]*:")


def add_arguments(parser):
    parser.add_argument("-e", dest="envelope", action="store_true", help="show the envelope records")
    parser.add_argument("-h", dest="header", action="store_true", help="show the message header")
    parser.add_argument("-b", dest="body", action="store_true", help="show the message body")
    parser.add_argument("-q", dest="search_queue", action="store_true",
                        help="look the arguments up in the queue as queue IDs")
    parser.add_argument("names", nargs="+", metavar="ID|FILE", help="queue ID or queue file")


def _bytes(text):
    return text.encode("utf-8", "surrogateescape")


def _asctime(value):
    try:
        return time.asctime(time.localtime(float(value)))
    except (ValueError, OverflowError, OSError):
        return value


def _envelope_lines(kind, payload):
    """The postcat lines of one envelope record; CorruptQueueFile for a bad one."""
    if kind == b"R":
        fields = payload[1:].split(b"\0")
        if payload[:1] not in (queuefile.PENDING, queuefile.DONE) or len(fields) != 4 or not fields[0]:
            raise queuefile.CorruptQueueFile("bad recipient record")
        address, original, orcpt, notify = fields
        lines = []
        if orcpt:
            lines.append(b"dsn_original_recipient: " + orcpt)
        if notify:
            lines.append(b"dsn_notify_flags: " + notify)
        if original:
            lines.append(b"original_recipient: " + original)
        name = b"done_recipient: " if payload[:1] == queuefile.DONE else b"recipient: "
        return lines + [name + address]
    if kind == b"A":
        return [b"message_arrival_time: " + _bytes(_asctime(payload.decode("ascii", "replace")))]
    if kind == b"S":
        return [b"sender: " + payload]
    attribute = {b"B": b"encoding=", b"U": b"smtputf8=", b"I": b"envelope_id=",
                 b"T": b"ret_flags=", b"X": b""}.get(kind)
    if attribute is None:
        raise queuefile.CorruptQueueFile(f"unknown record type {kind!r}")
    return [b"named_attribute: " + attribute + payload]


def _scan(handle):
    """(envelope records, records after the content, content (offset, size) or None,
    end record seen, error or None), reading as far as the file allows."""
    before, after, content, ended, error = [], [], None, False, None
    try:
        size = os.fstat(handle.fileno()).st_size
        # The record reader of queuefile itself, so that cat and the queue agree.
        for kind, payload, offset, position in queuefile.records(handle.fileno(), size):
            if kind == b"E":
                ended = True
            elif kind == b"M":
                content = (offset, position - offset - 1)
            else:
                (after if content else before).extend(_envelope_lines(kind, payload))
    except queuefile.CorruptQueueFile as problem:
        error = str(problem)
    return before, after, content, ended, error


def _validate(handle, path):
    """Why read_queue_file() finds the open file corrupt, or None."""
    # Through /proc, the very file that is open, even if the queue manager renamed it.
    same_file = f"/proc/self/fd/{handle.fileno()}"
    try:
        queuefile.read_queue_file(same_file if os.path.exists(same_file) else path)
    except queuefile.CorruptQueueFile as error:
        return str(error)
    return None


def _copy(handle, size, out):
    """Copy ``size`` bytes; returns the last byte written (b"" if none)."""
    last = b""
    while size > 0:
        data = handle.read(min(CHUNK, size))
        if not data:
            break
        out.write(data)
        last = data[-1:]
        size -= len(data)
    return last


def _write_text(handle, size, out, want_header, want_body):
    """Header lines (-h) and/or the body (-b, from the first non-header line on)."""
    if want_header and want_body:
        return _copy(handle, size, out)
    pending, last, previous_was_header = b"", b"", False
    while size > 0 or pending:
        data = handle.read(min(CHUNK, size)) if size > 0 else b""
        size -= len(data)
        pending += data
        while True:
            newline = pending.find(b"\n")
            if newline < 0 and size > 0 and data:
                break                       # a header line continues in the next chunk
            line = pending if newline < 0 else pending[:newline + 1]
            if not line:
                return last
            text = line.rstrip(b"\r\n")
            if _HEADER_LINE.match(text) or (previous_was_header and text[:1] in (b" ", b"\t")):
                previous_was_header = True
                if want_header:
                    out.write(line)
                    last = line[-1:]
                pending = pending[len(line):]
                continue
            if not want_body:
                return last                 # the header is over and nothing else is wanted
            out.write(pending)
            last = pending[-1:] if pending else last
            copied = _copy(handle, size, out)
            return copied or last
    return last


def show(path, label, out, envelope=True, header=True, body=True):
    """Print one queue file to the binary stream ``out``; the reason it is corrupt, or None.

    The file is opened once and everything is read from that descriptor, so
    the output stays whole when the queue manager moves the file meanwhile.
    """
    with open(path, "rb") as handle:
        problem = _validate(handle, path)
        before, after, content, ended, scan_error = _scan(handle)
        name = _bytes(label)
        if envelope:
            out.write(b"*** ENVELOPE RECORDS " + name + b" ***\n")
            if content is not None:
                recipients = sum(1 for line in before + after
                                 if line.startswith((b"recipient: ", b"done_recipient: ")))
                out.write(_bytes(f"message_size: {content[1]:>15} {content[0]:>15} {recipients:>15}\n"))
            for line in before:
                out.write(line + b"\n")
        if content is not None:
            if envelope:
                out.write(b"*** MESSAGE CONTENTS " + name + b" ***\n")
            if header or body:
                handle.seek(content[0])
                last = _write_text(handle, content[1], out, header, body)
                if envelope and last not in (b"", b"\n"):
                    out.write(b"\n")
            if envelope:
                out.write(b"*** HEADER EXTRACTED " + name + b" ***\n")
                for line in after:
                    out.write(line + b"\n")
        if envelope and ended and scan_error is None:
            out.write(b"*** MESSAGE FILE END " + name + b" ***\n")
    out.flush()
    return scan_error or problem


def _locate(name, search_queue, state):
    """(path, label) for one argument, or (None, exit status) after saying why not."""
    if search_queue or valid_queue_id(name):
        if not valid_queue_id(name):
            raise UsageError(f"{PREFIX}: fatal: bad mail queue ID: {printable(name)}")
        if "queue_directory" not in state:
            config = load_config(state["args"], COMMAND)
            state["queue_directory"] = os.path.abspath(config.expand("queue_directory"))
        found = manage.find_message(state["queue_directory"], name)
        if found is not None:
            return found[1], f"{found[0]}/{name}"
        if search_queue or not os.path.isfile(name):
            print(f"{PREFIX}: fatal: open queue file {name}: no such message in "
                  f"{state['queue_directory']}", file=sys.stderr)
            return None, os.EX_NOINPUT
    return name, name


def _show_argument(name, args, state, out, flags):
    """Show one argument; its exit status."""
    for attempt in range(2):
        path, label = _locate(name, args.search_queue, state)
        if path is None:
            return label
        try:
            problem = show(path, label, out, **flags)
        except FileNotFoundError as error:
            if attempt == 0 and label != name:
                continue            # the queue manager moved it meanwhile: look again
            failure = error
        except OSError as error:
            if isinstance(error, BrokenPipeError):
                raise
            failure = error
        else:
            if not problem:
                return 0
            print(f"{PREFIX}: error: {printable(label)}: corrupt queue file ({printable(problem)})",
                  file=sys.stderr)
            return EX_CORRUPT
        print(f"{PREFIX}: fatal: open {printable(label)}: {failure.strerror or failure}",
              file=sys.stderr)
        return os.EX_NOINPUT
    return os.EX_NOINPUT


def run(args):
    everything = not (args.envelope or args.header or args.body)
    flags = dict(envelope=args.envelope or everything, header=args.header or everything,
                 body=args.body or everything)
    out = sys.stdout.buffer
    state = {"args": args}
    status = 0
    for name in args.names:
        result = _show_argument(name, args, state, out, flags)
        status = status or result
    return status
