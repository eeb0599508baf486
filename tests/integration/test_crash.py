"""Crash safety (security rule 13, issue 6 "Crash tests"): kill the relay mid-drain, lose nothing.

test_kill_agent_qmgr_and_master_during_a_drain: a real master (smtp agents,
scache, qmgr; relayhost = the test server) drains 1,000 one-recipient
messages and 10 four-recipient ones, queued in incoming/ as sendmail does,
into a CountingServer on loopback (tests/integration/counting_server.py).
The server records every (Message-Id, recipient) it commits to, with the
time, when the final "." arrives and before its 250 - so a recipient can
never be marked done before the server's record of it - and answers "."
after 20 ms, as a server that queues the message does.  During the drain
the test SIGKILLs, in turn:

  1. a delivery agent (an smtp child, found by its title and the TCP
     connection it holds): the one that has sent "." for message #200 and
     waits for the 250, which the server holds back - the recipient is in
     rule 13's window (accepted, not marked done) and must be delivered again;
  2. the queue manager (the qmgr child), at 40 % of the drain.  The agents
     finish the deliveries it asked for (their replies go nowhere); then a
     wakeup on public/qmgr (what a submission does) makes the master start a
     new qmgr, which recovers active/.  Like Postfix's, the master only
     starts a dead qmgr when something connects to public/qmgr: a
     submission, or the master.cf wakeup timer (300 s);
  3. the master itself (kill -9), while an agent waits 2 s for the 250 to "."
     of a message not yet delivered when this step starts (armed then: the
     agents of the dead qmgr may have carried the drain far).  Its children
     see their lifeline close; DESIGN.md says a child "exits when the master
     goes away" but "never in the middle of a client", so that agent must
     still be alive, finish its delivery, mark
     its recipient done and exit; the qmgr exits once its outstanding
     requests are answered.  The test waits for every process of the old
     session to be gone (CHILDREN_EXIT_TIMEOUT) and fails, naming them, if
     any remains; none is killed by the test (the harness kills leftovers by
     pid at teardown, as it always does);
then restarts the master (master_harness start()) and waits for the drain.

What it shows:
  - every message is delivered: each (message, recipient) accepted at least
    once, and nothing else arrived (no bounce, no notice, no stray message);
  - none is lost: incoming/, active/, deferred/ and hold/ are empty at the
    end and nothing went to corrupt/;
  - no recipient that was marked done is delivered again.  Right after each
    kill (and once the old master's children are gone) the test reads every
    queue file (QueuedRecipient.done) and adds the messages the maillog says
    were "removed" (all their recipients were done); call the time the
    reading ended T and that set DONE.  Then
      (a) no recipient of DONE is accepted after T (strict: a done mark is
          written after the server's 250, so any later acceptance is a
          second delivery of a done recipient);
      (b) a recipient of DONE was accepted exactly once, unless it fell into
          the window of an earlier kill;
      (c) a recipient accepted more than once must be in the documented
          window of some kill: accepted by the server but not marked done
          when the snapshot after that kill was taken.

test_restarted_qmgr_does_not_resend_mail_an_agent_is_still_delivering: the
case step 2 waits out on purpose.  A qmgr dies while an agent is in a slow
delivery (the server holds its 354 to DATA for 4 s: nothing is accepted
yet); a submission makes the master start a new qmgr at once, which must
not give that message to a second agent (Postfix: agents hold a shared
lock on the queue file and qmgr_active_feed() defers a locked one).

Settings: minimal_backoff_time 1 s, maximal_backoff_time 2 s,
queue_run_delay 1 s, and transport_retry_time 1 s (an agent crash throttles
the smtp transport for that long; the default 60 s would idle the test).
"""

import dataclasses
import os
import re
import signal
import time

import pytest

from postclient import ipc
from postclient.queue import queuefile
from postclient.queue.qid import new_queue_id
from postclient.smtp.request import Recipient
from tests.integration.counting_server import CountingServer
from tests.integration.master_harness import alive, master_instance, wait_until  # noqa: F401

pytestmark = pytest.mark.integration

SINGLE = 1000                 # one-recipient messages
MULTI = 10                    # messages with MULTI_RECIPIENTS recipients each
MULTI_RECIPIENTS = 4
DOMAIN = "crash.example"
QUEUES = ("incoming", "active", "deferred", "hold")
CHILDREN_EXIT_TIMEOUT = 20    # seconds for the children to notice the dead master
DRAIN_TIMEOUT = 60
DOT_DELAY = 0.02              # the server's 250 to "." comes 20 ms after the "."

MASTER_CF = ["smtp unix - - n - - smtp",
             "scache unix - - n - 1 scache",
             "qmgr unix n - n 300 1 qmgr"]
MAIN_CF = ("minimal_backoff_time = 1s\nmaximal_backoff_time = 2s\nqueue_run_delay = 1s\n"
           "transport_retry_time = 1s\nsmtp_helo_timeout = 10s\n")
BODY = b"".join(b"line %03d of a crash test message, long enough to look like mail text.\r\n" % i
                for i in range(14))


# --- queueing -----------------------------------------------------------------------
def message_key(queue_id):
    return f"{queue_id}@crash.test"


def first_recipient(number, index=0):
    """The address of the index-th recipient of the number-th queued message."""
    return f"m{number:04d}-r{index}@{DOMAIN}"


def queue_messages(master):
    """Queue every message in incoming/ as sendmail would; {queue_id: [recipient]}."""
    incoming = os.path.join(master.queue_directory, "incoming")
    expected = {}
    plan = [1] * SINGLE + [MULTI_RECIPIENTS] * MULTI
    # spread the multi-recipient messages over the run
    for index in range(MULTI):
        plan.insert((index + 1) * SINGLE // (MULTI + 1), plan.pop())
    for number, count in enumerate(plan):
        queue_id = new_queue_id()
        recipients = [first_recipient(number, i) for i in range(count)]
        content = (b"From: sender@client.example\r\nTo: undisclosed-recipients:;\r\n"
                   b"Subject: crash test " + str(number).encode() + b"\r\n"
                   b"Message-Id: <" + message_key(queue_id).encode() + b">\r\n\r\n" + BODY)
        queuefile.write_queue_file(incoming, queue_id, sender="sender@client.example",
                                   recipients=[Recipient(r) for r in recipients],
                                   content=content, arrival_time=time.time())
        expected[queue_id] = recipients
    return expected


def wake(master, request=None):
    deadline = time.monotonic() + 10
    sock = ipc.connect_unix(master.socket_path("qmgr", public=True), deadline)
    try:
        ipc.expect_protocol(sock, "qmgr", 1, deadline)
        ipc.send_message(sock, request or {"request": "wakeup"}, deadline)
    finally:
        sock.close()


def queue_listing(master, name):
    found = []
    for directory, _, files in os.walk(os.path.join(master.queue_directory, name)):
        found += [os.path.join(directory, f) for f in files if not f.startswith(".")]
    return found


def queue_counts(master):
    return {name: len(queue_listing(master, name)) for name in QUEUES + ("corrupt",)}


# --- what the queue says is done ------------------------------------------------------
@dataclasses.dataclass
class Snapshot:
    label: str
    time: float                 # time.monotonic() after the last file was read
    done: set                   # {(message key, recipient)} marked done (or removed)
    accepted: set               # {(message key, recipient)} accepted by the server at `time`
    window: set                 # accepted but not done: duplicates allowed (rule 13)


def snapshot(label, master, expected, server):
    """Read every queue file and the maillog's "removed" lines (see the module doc)."""
    done = set()
    for name in QUEUES:
        for path in queue_listing(master, name):
            try:
                queued = queuefile.read_queue_file(path)
            except (FileNotFoundError, queuefile.CorruptQueueFile):
                continue            # moved meanwhile (rename is atomic: seen elsewhere or later)
            key = message_key(queued.queue_id)
            done.update((key, r.address) for r in queued.recipients if r.done)
    for queue_id in re.findall(r": ([0-9A-F]{22}): removed$", master.log(), re.M):
        if queue_id in expected:
            done.update((message_key(queue_id), r) for r in expected[queue_id])
    now = time.monotonic()
    accepted = {(a.message_id, a.recipient) for a in server.snapshot() if a.time <= now}
    return Snapshot(label, now, done, accepted, accepted - done)


# --- processes --------------------------------------------------------------------------
def socket_inodes(pid):
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def connection_owner(master, server_port, client_port):
    """The smtp child that holds the client end of the connection from ``client_port``."""
    inodes = set()
    with open("/proc/net/tcp", encoding="ascii") as table:
        next(table)
        for row in table:
            fields = row.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if local_port == client_port and remote_port == server_port:
                inodes.add(fields[9])
    owners = [pid for pid in master.children("smtp") if socket_inodes(pid) & inodes]
    return owners[0] if len(owners) == 1 else None


def agents_in_session(master, server_port):
    """smtp children that hold a TCP connection to the server."""
    inodes = set()
    with open("/proc/net/tcp", encoding="ascii") as table:
        next(table)
        for row in table:
            fields = row.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == server_port:
                inodes.add(fields[9])
    return [pid for pid in master.children("smtp") if socket_inodes(pid) & inodes]


def held_agent(master, server, recipient, timeout=30):
    """Wait until the server holds a reply for ``recipient``; the agent waiting for it."""
    try:
        hold = wait_until(lambda: server.held(recipient), timeout, interval=0.01,
                          what=f"the server to hold its reply to the delivery for {recipient}")
    except AssertionError as error:
        lines = [line for line in master.log().splitlines() if recipient in line or "warning" in line
                 or "error" in line or "fatal" in line]
        raise AssertionError(f"{error}; the maillog says:\n" + "\n".join(lines[-20:])) from None
    return wait_until(lambda: connection_owner(master, server.port, hold.client_port), 5,
                      interval=0.01, what=f"the smtp agent delivering to {recipient}")


def kill(pid):
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid), 5, interval=0.01, what=f"pid {pid} to die")


# --- the checks -------------------------------------------------------------------------
def describe(key, server, snapshots, master):
    queue_id = key[0].split("@")[0]
    times = [round(a.time, 3) for a in server.snapshot() if (a.message_id, a.recipient) == key]
    seen = [(s.label, round(s.time, 3), "done" if key in s.done else
             "window" if key in s.window else "-") for s in snapshots]
    lines = [line for line in master.log().splitlines() if queue_id in line and key[1] in line
             or queue_id in line and ("removed" in line or "warning" in line)]
    return f"{key}: accepted at {times}; snapshots {seen}; log:\n    " + "\n    ".join(lines[-12:])


def check_no_loss_no_duplicate(master, server, expected, snapshots):
    counts = server.counts()
    wanted = {(message_key(q), r) for q, recipients in expected.items() for r in recipients}
    missing = sorted(wanted - set(counts))
    stray = sorted(set(counts) - wanted)
    assert not missing, f"{len(missing)} recipients never delivered, e.g. {missing[:5]}"
    assert not stray, f"unexpected deliveries (bounces, notices?): {stray[:5]}"
    problems = []
    window = set()
    for shot in snapshots:
        late = [a for a in server.snapshot()
                if (a.message_id, a.recipient) in shot.done and a.time > shot.time]
        for acceptance in late:
            problems.append(f"(a) marked done by the {shot.label} snapshot, delivered again "
                            f"{acceptance.time - shot.time:.3f}s later: "
                            + describe((acceptance.message_id, acceptance.recipient), server,
                                       snapshots, master))
        for key in sorted(shot.done - window):
            if counts[key] != 1:
                problems.append(f"(b) done at the {shot.label} snapshot but accepted "
                                f"{counts[key]} times: " + describe(key, server, snapshots, master))
        window |= shot.window
    for key, count in sorted(counts.items()):
        if count > 1 and key not in window:
            problems.append(f"(c) accepted {count} times outside every kill's window: "
                            + describe(key, server, snapshots, master))
    assert not problems, f"{len(problems)} violation(s) of rule 13:\n" + "\n".join(problems[:10])
    return [key for key, count in counts.items() if count > 1]


def start_relay(master_instance, server, master_cf=MASTER_CF, extra=""):
    return master_instance(master_cf, f"relayhost = {server.nexthop}\n{MAIN_CF}{extra}")


@pytest.fixture
def counting_server():
    servers = []

    def make(**options):
        servers.append(CountingServer(**options).start())
        return servers[-1]

    yield make
    for server in servers:
        server.stop()


def drained(master):
    counts = queue_counts(master)
    return not any(counts[name] for name in QUEUES)


def recipient_of(expected, index):
    """The (message key, recipient) of the index-th queued message's first recipient."""
    for queue_id, recipients in expected.items():
        if recipients[0].startswith(f"m{index:04d}-"):
            return message_key(queue_id), recipients[0]
    raise KeyError(index)


def an_undelivered(expected, server):
    """The (message key, recipient) of a message not accepted yet, a quarter of the
    way into the rest (in queue order): past the ones being sent right now, and
    with mail left after it when the master dies."""
    accepted = server.counts()
    waiting = sorted((recipients[0], message_key(queue_id)) for queue_id, recipients
                     in expected.items() if (message_key(queue_id), recipients[0]) not in accepted)
    assert waiting, "every message was delivered before the master was killed"
    recipient, key = waiting[len(waiting) // 4]
    return key, recipient


def test_kill_agent_qmgr_and_master_during_a_drain(master_instance, counting_server):
    started = time.monotonic()
    server = counting_server(dot_delay=DOT_DELAY)
    master = start_relay(master_instance, server)
    # The server holds its 250 to "." for these: the agent killed in step 1 is
    # one that has sent "." and waits for the reply (rule 13's window), and
    # the master is killed in step 3 while an agent waits 2 s for its reply.
    # (Armed before queueing: the qmgr may start on mail as soon as it is there.)
    server.hold(first_recipient(200), at="dot", seconds=None)
    expected = queue_messages(master)
    total = sum(len(r) for r in expected.values())
    in_window = recipient_of(expected, 200)
    wake(master)
    progress = lambda: len(server.snapshot())          # noqa: E731
    snapshots = []

    # 1. a delivery agent that sent "." and waits for the server's 250
    agent = held_agent(master, server, in_window[1])
    kill(agent)
    snapshots.append(snapshot("agent kill", master, expected, server))
    assert in_window in snapshots[-1].window
    master.wait_for_log(rf"pctest/master\[\d+\]: warning: process pctest/smtp pid {agent} "
                        rf"killed by signal 9")

    # 2. the queue manager, wherever it is
    wait_until(lambda: progress() >= total * 0.40, 30, what="40% of the drain")
    (qmgr,) = master.children("qmgr")
    kill(qmgr)
    snapshots.append(snapshot("qmgr kill", master, expected, server))
    # The agents finish what the dead qmgr asked (they cannot report it); only
    # then does new mail arrive and the master start a new qmgr (see the race
    # test below for a qmgr that comes back before they are done).
    wait_until(lambda: not agents_in_session(master, server.port), 10, interval=0.01,
               what="the agents to finish the deliveries of the dead qmgr")
    assert not master.children("qmgr")
    wake(master)
    wait_until(lambda: [p for p in master.children("qmgr") if p != qmgr], 10,
               what="the master to start a new qmgr")

    # 3. the master, while an agent waits for a reply
    lingering = an_undelivered(expected, server)
    server.hold(lingering[1], at="dot", seconds=2.0)
    orphan = held_agent(master, server, lingering[1])
    old_session = master.session
    old_children = set(master.session_pids()) - {master.master_pid}
    kill(master.master_pid)
    master.process.wait(5)
    snapshots.append(snapshot("master kill", master, expected, server))
    assert alive(orphan), "the agent in the middle of a delivery did not finish it"
    try:
        wait_until(lambda: not master.session_pids(), CHILDREN_EXIT_TIMEOUT,
                   what="the children to exit after the master died")
    except AssertionError:
        left = {pid: open(f"/proc/{pid}/cmdline", "rb").read() for pid in master.session_pids()}
        raise AssertionError(f"children still alive {CHILDREN_EXIT_TIMEOUT}s after the master "
                             f"was killed: {left}") from None
    assert old_children and not any(alive(pid) for pid in old_children)
    snapshots.append(snapshot("children gone", master, expected, server))
    assert lingering in snapshots[-1].done, \
        "the agent that finished its delivery after the master died did not mark it done"
    remaining = queue_counts(master)
    assert remaining["incoming"] + remaining["active"] + remaining["deferred"] > 0, \
        "the drain ended before the master was killed: the test proves nothing"

    # restart and drain
    master.start()
    assert master.session != old_session
    master.wait_for_log(r"pctest/master\[\d+\]: daemon started", count=2)
    wait_until(lambda: drained(master) and len(server.counts()) >= total, DRAIN_TIMEOUT,
               interval=0.1, what=f"the queue to drain after the restart "
                                  f"(queues {queue_counts(master)})")
    time.sleep(1.0)                   # anything still arriving would be a duplicate
    counts = queue_counts(master)
    assert not any(counts.values()), f"queue not empty at the end: {counts}"
    duplicates = check_no_loss_no_duplicate(master, server, expected, snapshots)
    accepted = server.counts()
    assert accepted[in_window] == 2, "the recipient in the window was not delivered again"
    assert accepted[lingering] == 1
    print(f"\n{len(expected)} messages, {total} recipients, {server.connections} connections, "
          f"{len(duplicates)} duplicate(s), all in a kill's window, "
          f"{time.monotonic() - started:.1f}s; windows "
          + ", ".join(f"{s.label}: {len(s.window)}" for s in snapshots))


RACE_MESSAGES = 40
RACE_DRAIN_TIMEOUT = 75


def test_restarted_qmgr_does_not_resend_mail_an_agent_is_still_delivering(
        master_instance, counting_server):
    """A qmgr dies while an agent is in the middle of a slow delivery; the next
    submission makes the master start a new qmgr at once, which moves active/
    back to incoming/ and schedules everything again.  The message the old
    agent is still delivering must not be given to a second agent (Postfix: the
    agent holds a shared lock on the queue file and qmgr_active_feed() defers a
    locked file): the recipient was not accepted when the qmgr died, so a second
    acceptance is outside rule 13's window."""
    server = counting_server()
    master = start_relay(master_instance, server)
    server.hold(first_recipient(3), at="data", seconds=4.0)     # a slow server: 354 after 4 s
    incoming = os.path.join(master.queue_directory, "incoming")
    expected = {}
    for number in range(RACE_MESSAGES):
        queue_id = new_queue_id()
        expected[queue_id] = [first_recipient(number)]
        queuefile.write_queue_file(
            incoming, queue_id, sender="sender@client.example",
            recipients=[Recipient(expected[queue_id][0])],
            content=b"Message-Id: <" + message_key(queue_id).encode() + b">\r\n\r\n" + BODY,
            arrival_time=time.time())
    slow = recipient_of(expected, 3)
    wake(master)
    agent = held_agent(master, server, slow[1])
    (qmgr,) = master.children("qmgr")
    kill(qmgr)
    shot = snapshot("qmgr kill", master, expected, server)
    assert slow not in shot.accepted
    wake(master)                                       # a new message arrives
    wait_until(lambda: [p for p in master.children("qmgr") if p != qmgr], 5,
               what="a new qmgr")
    wait_until(lambda: len(server.counts()) >= RACE_MESSAGES, 30, interval=0.1,
               what="every recipient to be delivered")
    wait_until(lambda: master.log_lines(rf"pctest/smtp\[{agent}\]: .*to=<{slow[1]}>"), 10,
               what="the slow agent to finish its delivery")
    time.sleep(0.5)
    check_no_loss_no_duplicate(master, server, expected, [shot])
    # A qmgr that leaves a message being delivered alone may retry it later
    # (Postfix defers a locked file by 60 s): give it that long to empty the queue.
    wait_until(lambda: drained(master), RACE_DRAIN_TIMEOUT, interval=0.2,
               what=f"the queue to drain (queues {queue_counts(master)})")
    assert not queue_counts(master)["corrupt"]
