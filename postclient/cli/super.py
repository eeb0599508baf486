"""``postclient super``: delete, hold, release and requeue messages, like postsuper(1).

Exports add_arguments(), run() and ACTIONS.  Reads queue_directory and
ipc_timeout.

  -d ID|ALL|-   delete the message and its bounce/, defer/ and trace/ logs
                (default queues: hold, incoming, active, deferred; maildrop
                and corrupt when named).  ``-d ALL`` over the default queues
                also removes status logs that belong to no message.
  -h ID|ALL|-   put on hold: move to hold/ (from incoming, active, deferred).
  -H ID|ALL|-   release from hold: move to deferred/ with mtime now, so that
                the next deferred scan retries it.
  -r ID|ALL|-   requeue: move to incoming/ (Postfix: maildrop/) with mtime
                now and remove its defer/ log, so that the queue manager
                takes it as new mail; done recipients stay done, and bounce/
                and trace/ logs are kept for the notices still owed.
  [queue ...]   restrict the operations to these queues ("super -d ALL
                deferred").

Each option may be repeated; ``-`` reads IDs from standard input, one per
line.  ``ALL`` must be upper case.  As in postsuper, the operations on ALL
run first, then deletions, requeues, holds and releases by ID; a message
is printed as "postclient/super: ID: removed" (placed on hold, released
from hold, requeued) and the counts as "postclient/super: Deleted: 3
messages" on standard error, all once the changes are durable (postsuper
prints each ID as it goes).  An invalid ID is warned about and skipped;
an ID that is in none of the queues is skipped silently.

Every move is a rename and every deletion an unlink, made durable by one
fsync per changed directory at the end (and before each early wakeup),
and a deleted message's status logs go only after that (QueueMover in
postclient/queue/manage.py): nothing is ever half-moved.  A message in
active/ belongs to the running queue manager; ``-d``, ``-h`` and ``-r``
act on it by rename or unlink all the same, and the queue manager drops
the message when it finds its file gone.  Afterwards the queue manager is
woken up when there is something for it to notice (requeued or released
mail, changes in active/); when it does not run, the change waits for
it, with a warning for requeued or released mail.  With ``ALL``, the
messages of a queue move up to MOVE_CHUNK at a time, in one compiled call
(fileio.move_names()); a message the target queue already has stays where it
is, the others of its chunk still move and are counted, and the command
stops with an error after that chunk.

Exit statuses: 0 success (also with invalid or unknown IDs); 64 bad usage
(no operation, unknown queue name); 74 a file operation failed; 77
permission denied; 78 configuration error.
"""

import errno
import os
import sys
import time

from ..queue import manage
from ..queue.qid import valid_queue_id
from ..record import Record
from .common import (QMGR_TIMEOUT, UsageError, fatal, load_config, os_error_status, printable, warn,
                     warning_text)

COMMAND = "super"
PREFIX = f"postclient/{COMMAND}"
_DEFAULT = ("hold", "incoming", "active", "deferred")


class Action(Record):
    __slots__ = ("name", "option", "verb", "done", "report", "default_queues", "sources", "target")

    def __init__(self, name, option, verb, done, report, default_queues, sources, target=None):
        self.name = name                        # argparse destination
        self.option = option
        self.verb = verb                        # for --help
        self.done = done                        # per-message text
        self.report = report                    # summary label
        self.default_queues = default_queues    # when no queue is named
        self.sources = sources                  # queues it may take a message from
        self.target = target                    # queue it moves to (None: delete)


ACTIONS = {
    "delete": Action("delete", "-d", "delete", "removed", "Deleted", _DEFAULT,
                     ("maildrop", "incoming", "active", "deferred", "hold", "corrupt")),
    "requeue": Action("requeue", "-r", "requeue", "requeued", "Requeued", _DEFAULT,
                      ("incoming", "active", "deferred", "hold"), "incoming"),
    # Never maildrop (not yet validated by pickup) nor corrupt (not mail).
    "hold": Action("hold", "-h", "put on hold", "placed on hold", "Placed on hold",
                   ("incoming", "active", "deferred"), ("incoming", "active", "deferred"), "hold"),
    "release": Action("release", "-H", "release from hold", "released from hold", "Released from hold",
                      ("hold",), ("hold",), "deferred"),
}
ORDER = ("delete", "requeue", "hold", "release")              # postsuper's order by ID
REPORT_ORDER = ("requeue", "delete", "hold", "release")       # and in its report


def add_arguments(parser):
    for action in ACTIONS.values():
        parser.add_argument(action.option, dest=action.name, metavar="ID", action="append",
                            default=[], help=f"{action.verb} a message (ID), every message "
                                             "(ALL) or those named on standard input (-)")
    parser.add_argument("queues", nargs="*", metavar="queue",
                        help="restrict to these queues: " + ", ".join(manage.MESSAGE_QUEUES))


EARLY_WAKE = 100    # messages released or requeued before the first early wakeup
MOVE_CHUNK = 1000   # messages moved by one compiled call (``ALL``)


class _Run:
    """The state of one invocation: counts and what the queue manager should hear.

    Releasing or requeueing many messages wakes the queue manager early, after
    the first EARLY_WAKE and then after ten times as many each time (100,
    1,000, 10,000...), each once the moves so far are durable: delivery starts
    while the rest is still being moved, and a large queue costs only a few
    scans of deferred/.  The last wakeup comes at the end, as before.
    """

    def __init__(self, config, queue_directory, explicit_queues):
        self.config = config
        self.queue_directory = queue_directory
        self.explicit_queues = explicit_queues
        self.counts = {name: 0 for name in ACTIONS}
        self.wake = False           # active/ changed, or mail was requeued/released
        self.tell_user = False      # ... and the user expects it to move on
        self.stdin_ids = None
        self.mover = manage.QueueMover(queue_directory)   # fsyncs before anyone is told
        self.released = False       # mail went to deferred/, due now
        self.moved_on = 0           # messages released or requeued so far
        self.next_early_wake = EARLY_WAKE   # None: the queue manager did not answer
        self.lines = []             # (text, is a "done" line): printed in order once durable

    def queues(self, action):
        chosen = self.explicit_queues or action.default_queues
        return [name for name in chosen if name in action.sources]

    def _done(self, action, queue_name):
        self.counts[action.name] += 1
        if queue_name == "active" or action.name in ("requeue", "release"):
            self.wake = True
        if action.name in ("requeue", "release"):
            self.tell_user = True
            self.released = self.released or action.name == "release"
            self.moved_on += 1
            if self.next_early_wake is not None and self.moved_on >= self.next_early_wake:
                self.next_early_wake *= 10
                self.mover.sync()   # what the queue manager finds must be durable
                self.wake_queue_manager(early=True)

    def apply(self, action, queue_name, queue_id):
        """Apply ``action`` to a message in ``queue_name``; True if it was there."""
        directory = self.queue_directory
        if action.target is None:
            done = self.mover.delete(queue_id, queue_name)     # its logs go at sync()
        elif queue_name == action.target:     # requeue of mail already in incoming/
            try:
                os.utime(manage.message_path(directory, queue_name, queue_id))
                done = True
            except FileNotFoundError:
                done = False
        else:
            mtime = time.time() if action.target in ("deferred", "incoming") else None
            done = self.mover.move(queue_id, queue_name, action.target, mtime)
        if done and action.name == "requeue":
            manage.remove_defer_log(directory, queue_id)
        if done:
            self._done(action, queue_name)
        return done

    def move_all(self, action, queue_name, queue_ids):
        """apply() to many messages of one queue, MOVE_CHUNK to a compiled call
        (QueueMover.move_many()), each chunk ending where an early wakeup is due."""
        start = 0
        while start < len(queue_ids):
            size = MOVE_CHUNK
            if self.next_early_wake is not None:
                size = max(1, min(size, self.next_early_wake - self.moved_on))
            chunk = queue_ids[start:start + size]
            start += size
            mtime = time.time() if action.target in ("deferred", "incoming") else None
            errors = self.mover.move_many(chunk, queue_name, action.target, mtime)
            failed = None
            for queue_id, error in zip(chunk, errors):
                if error == 0:
                    if action.name == "requeue":
                        manage.remove_defer_log(self.queue_directory, queue_id)
                    self._done(action, queue_name)
                elif error != errno.ENOENT and failed is None:
                    failed = queue_id, error
            if failed is not None:      # the moves before and after it stand, and are reported
                queue_id, error = failed
                if error == errno.EEXIST:
                    raise FileExistsError(f"{action.target}/{queue_id} already exists")
                raise OSError(error, os.strerror(error),
                              manage.message_path(self.queue_directory, queue_name, queue_id))

    def one(self, action, queue_id):
        if not valid_queue_id(queue_id):
            self.lines.append((warning_text(COMMAND, f"invalid mail queue id: {printable(queue_id)}"),
                               False))
            return
        queues = self.queues(action)
        for _ in range(2):      # the queue manager may move it under our feet
            for queue_name in queues:
                if self.apply(action, queue_name, queue_id):
                    self.lines.append((f"{PREFIX}: {queue_id}: {action.done}", True))
                    return

    def all(self, action):
        # Listed before anything moves, so that a message moved into a queue
        # that comes later in the list is not taken (and counted) twice.
        listed = [(queue_name, manage.queue_ids(self.queue_directory, queue_name))
                  for queue_name in self.queues(action)]
        for queue_name, queue_ids in listed:
            if action.target is None or queue_name == action.target:
                for queue_id in queue_ids:
                    self.apply(action, queue_name, queue_id)
            else:
                self.move_all(action, queue_name, queue_ids)
        if action.name == "delete" and not self.explicit_queues:
            self.mover.sync()       # the deletions durable (and their logs gone) first
            manage.remove_orphan_status_logs(self.queue_directory)

    def read_stdin(self):
        if self.stdin_ids is None:
            self.stdin_ids = [line.strip() for line in sys.stdin.read().splitlines()]
            self.stdin_ids = [queue_id for queue_id in self.stdin_ids if queue_id]
            return self.stdin_ids
        return []               # standard input is read once, as in postsuper

    def report(self):
        """Make every change durable, then say what was done: each message by ID
        (with the warnings about IDs, in order), then the counts.  When the fsync
        fails, only the warnings are printed: nothing is reported as done."""
        try:
            self.mover.sync()                       # durable before it is reported
        except OSError:
            self._print_lines(done_too=False)
            raise
        finally:
            self.mover.close()
        self._print_lines(done_too=True)
        for name in REPORT_ORDER:
            count = self.counts[name]
            if count:
                print(f"{PREFIX}: {ACTIONS[name].report}: {count} message{'s' if count > 1 else ''}",
                      file=sys.stderr)

    def _print_lines(self, done_too):
        for text, done in self.lines:
            if done_too or not done:
                print(text, file=sys.stderr)

    def wake_queue_manager(self, early=False):
        """Wake the queue manager if anything it should see has changed; only the
        last wakeup's failure is reported (the mail waits for the next scan)."""
        if not self.wake:
            return
        timeout = min(float(self.config.get("ipc_timeout")), QMGR_TIMEOUT)
        try:
            request = {"request": "wakeup"}
            if self.released:
                request["deferred"] = True      # scan deferred/ too: released mail is due now
            manage.notify_qmgr(self.queue_directory, request, timeout)
        except manage.QmgrUnavailable as error:
            if early:
                self.next_early_wake = None     # not running: no more tries until the end
                return
            if self.tell_user:
                warn(COMMAND, f"cannot wake up the queue manager ({error}); the mail will be "
                              "processed when the queue manager runs")


def run(args):
    wanted = {name: getattr(args, name) for name in ORDER if getattr(args, name)}
    if not wanted:
        raise UsageError(f"{PREFIX}: fatal: no operation: specify -d, -h, -H or -r "
                         "with a queue ID, ALL or -")
    for queue_name in args.queues:
        if queue_name not in manage.MESSAGE_QUEUES:
            raise UsageError(f"{PREFIX}: fatal: invalid directory name: {printable(queue_name)}")
    config = load_config(args, COMMAND)
    queue_directory = os.path.abspath(config.expand("queue_directory"))
    if not os.path.isdir(queue_directory):
        fatal(COMMAND, f"queue directory {queue_directory} does not exist")
        return os.EX_UNAVAILABLE
    state = _Run(config, queue_directory, list(dict.fromkeys(args.queues)))
    everything = [name for name in ORDER if "ALL" in wanted.get(name, ())]
    for name in everything:
        if any(item != "ALL" for item in wanted[name]):
            warn(COMMAND, f'option "{ACTIONS[name].option} ALL" will ignore other command line queue IDs')
    failure = None
    try:
        for name in everything:
            state.all(ACTIONS[name])
        for name in ORDER:
            if name in wanted and name not in everything:
                for item in wanted[name]:
                    for queue_id in state.read_stdin() if item == "-" else [item]:
                        state.one(ACTIONS[name], queue_id)
    except OSError as error:
        failure = error             # what was done before it is still made durable and reported
    try:
        state.report()
    except OSError as error:        # the final fsync: nothing is reported as done
        failure = failure or error
    if failure is not None:
        fatal(COMMAND, f"{failure.strerror or failure}"
                       f"{': ' + str(failure.filename) if failure.filename else ''}")
        return os_error_status(failure)
    state.wake_queue_manager()
    return 0
