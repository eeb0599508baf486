"""Queue drain benchmark: postclient vs Postfix, side by side, into the same smtp-sink.

    python bench/drain.py [--messages N] [--size BYTES] [--rounds R (3)] [--only NAME]
                          [--profile DIR] [--no-results] [--set NAME=VALUE ...]
                          [--python PATH|dev]
    python bench/drain.py --compare 'NAME=VALUE,...' --compare '...' [--rounds R]

(from the project root; as root, with Debian's postfix package installed:
smtp-sink, postfix, postsuper, postqueue).  ``make bench`` runs it after the
codec benchmarks, as ``python bench/drain.py --profile run/bench-profile``.
Each round drains Postfix, then postclient; the ratios use the medians of
the rounds (default 3).

What one round does, for each relay in turn (Postfix first, then postclient):
  1. one temporary instance (its own config and queue directory under /tmp,
     never /etc/postfix), relayhost = [127.0.0.1]:<the sink>;
  2. N messages (default 2,000) of BYTES (default 5,120) bytes, one
     recipient each, all to one destination, are queued *on hold*:
       Postfix     submitted over SMTP to the instance's own smtpd; a
                   header_checks HOLD action makes cleanup put each one in
                   hold/;
       postclient  written as durable queue files (write_queue_file) into
                   hold/;
  3. the clock starts; the mail is released the way an operator does it:
       Postfix     postsuper -H ALL; postqueue -f
       postclient  postclient super -H ALL; postclient queue -f
                   (or, where those tools are not there, a rename of every
                   file from hold/ to deferred/ with mtime now and a "flush"
                   request on public/qmgr);
  4. the clock stops when the sink has counted N more messages and the
     instance's incoming/, active/, deferred/ and hold/ are empty.
postclient runs as a Debian system would run it: installed as a package
(``pip install .`` of this tree, compiled modules and byte-code included)
into a virtualenv of Debian's own interpreter, /usr/bin/python3, the one a
.deb of postclient depends on; Postfix too is Debian's package.  The
install lives in run/bench-install and is made again whenever the sources
change (a digest of the files ``git ls-files`` names, committed or not,
copied to a clean directory first so that no build output of this tree
goes in); it takes about 40 s.  --python PATH installs for another interpreter;
--python dev runs the development tree on the interpreter running this
script instead, byte-compiled first (compileall), as before session 14.
Why: the development machines' interpreter is a pyenv build without
profile-guided optimization, and runs postclient's Python slower than
Debian's build (bench/RESULTS.md, "Session 14"); users run the latter.
Where /usr/bin/python3 cannot make the install (no venv module, no
network for the build requirements), the development tree is used and the
table says so.
Both relays use their default concurrency and connection-cache settings
(initial_destination_concurrency 5, destination concurrency limit 20,
connection caching on demand) and log every delivery to a file
(maillog_file; Postfix through postlogd).

The sink is one Postfix ``smtp-sink -c`` (running counters: sessions,
QUITs, messages) on 127.0.0.1, shared by both relays; it runs as nobody and
stores nothing.  Its session counter gives the number of SMTP connections
each relay made (read once the relay's cached connections have timed out).

CPU per message: the sum of user+system CPU of every process of the
instance during the drain, divided by N.  The processes of an instance are
those of its master's session (both masters call setsid; every service
process descends from the master).  For each process alive at a reading,
/proc/<pid>/stat gives utime+stime (all its threads, dead ones included)
plus cutime+cstime (its children that it has reaped); a process that died
during the drain was reaped by the master, so its CPU is in the master's
cutime/cstime.  So the session's total at the end minus the total at the
start is the CPU the whole process tree used during the drain, whoever
lived or died.  Resolution: one clock tick (10 ms) per process per
reading.  The release tools (postsuper/postqueue, postclient super/queue)
are not in the session; their CPU, from this script's RUSAGE_CHILDREN, is
reported on its own line.  A sampler also reads every session process
every 50 ms to split the CPU by process title (smtp, qmgr, ...): that split
misses each dead process's last interval, so it is a lower bound.  The
context switches (voluntary and involuntary) of each process's threads are
read at the release and at the end, by title: a thread or process that ended
in between takes its count along, so they are a lower bound too.  On a
virtual machine a switch is far from free (bench/RESULTS.md, "Session 6").

--profile DIR runs one more postclient drain (not timed for the results)
under bench/profile_hook.py: cProfile in every service process, threads
included; the merged statistics are written to DIR/<service>.prof and
their top functions to DIR/summary.txt.

--compare runs experiments instead: postclient only, one drain per
--compare value in each round (alternated, into the same sink, so that the
machine's drift touches each alike), and a table of medians per value;
e.g. --compare smtp_agent_threads=1 --compare smtp_agent_threads=5.
Nothing is written to bench/RESULTS.md.

Results go to the "## Drain" section of bench/RESULTS.md (replaced on
each run, the rest of the file kept), with this command, the machine and
the date.  The goal (issue 6): postclient drains at least twice as fast as
Postfix.
"""

import argparse
import datetime
import glob
import io
import os
import platform
import pstats
import re
import resource
import shlex
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from postclient import ipc  # noqa: E402
from postclient.queue import queuefile  # noqa: E402
from postclient.queue.qid import new_queue_id  # noqa: E402

RESULTS = os.path.join(ROOT, "bench", "RESULTS.md")
PYTHON = sys.executable          # postclient's interpreter (prepare_postclient())
POSTCLIENT_RUNS_ON = "the development tree on " + sys.executable
SYSTEM_PYTHON = "/usr/bin/python3"
INSTALL_DIR = os.path.join(ROOT, "run", "bench-install")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
POSTFIX_SBIN = "/usr/sbin"
POSTFIX_DAEMONS = "/usr/lib/postfix/sbin"
QUEUES = ("incoming", "active", "deferred", "hold")
DRAIN_TIMEOUT = 600
SENDER = "bench@client.example"
SUBJECT = "drain bench"

# Postfix: the instance the tests use (tests/integration/postfix_instance.py),
# with pickup/cleanup for submission and no retry/warning delays that could matter.
POSTFIX_MAIN_CF = {
    "compatibility_level": "3.6",
    "mail_owner": "postfix",
    "setgid_group": "postdrop",
    "myhostname": "relay.postfix.bench",
    "mydomain": "postfix.bench",
    "myorigin": "$myhostname",
    "mydestination": "",
    "local_recipient_maps": "",
    "alias_maps": "",
    "alias_database": "",
    "inet_interfaces": "127.0.0.1",
    "inet_protocols": "ipv4",
    "mynetworks": "127.0.0.0/8",
    "smtpd_peername_lookup": "no",
    "biff": "no",
    "smtputf8_enable": "no",
    "smtp_dns_support_level": "disabled",
    "delay_warning_time": "0",
    "in_flow_delay": "0",
    "queue_run_delay": "1s",
    "minimal_backoff_time": "1s",
    "maximal_backoff_time": "2s",
}
POSTFIX_MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""
POSTCLIENT_MASTER_CF = """\
smtp       unix  -       -       n       -       -       smtp
scache     unix  -       -       n       -       1       scache
qmgr       unix  n       -       n       300     1       qmgr
"""


class BenchError(Exception):
    pass


# --- processes -------------------------------------------------------------------------
def proc_stat(pid):
    """(state, session, own CPU ticks, reaped children's CPU ticks, comm) or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read().decode("ascii", "replace")
    except OSError:
        return None
    comm = data[data.index("(") + 1:data.rindex(")")]
    fields = data[data.rindex(")") + 2:].split()
    return (fields[0], int(fields[3]), int(fields[11]) + int(fields[12]),
            int(fields[13]) + int(fields[14]), comm)


def session_members(session):
    members = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = proc_stat(int(name))
            if stat is not None and stat[1] == session:
                members[int(name)] = stat
    return members


def session_cpu(session):
    """CPU seconds of the session's whole process tree so far (see the module doc)."""
    return sum(own + reaped for _, _, own, reaped, _ in session_members(session).values()) / CLOCK_TICKS


def title(pid, comm):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            words = handle.read().split(b"\0")
    except OSError:
        return comm
    first = words[0].decode("utf-8", "replace") if words else ""
    if "/" in first and not first.startswith("/"):
        return first.split("/", 1)[1].split()[0]      # postclient: "pcbench/smtp"
    return comm                                       # Postfix: the program name


def thread_switches(pid):
    """{thread id: voluntary + involuntary context switches} of a process's live threads."""
    switches = {}
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return switches
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as handle:
                status = handle.read()
        except OSError:
            continue
        switches[tid] = sum(int(line.split()[1]) for line in status.splitlines()
                            if line.startswith(("voluntary_ctxt_switches:",
                                                "nonvoluntary_ctxt_switches:")))
    return switches


class CpuSampler:
    """Per-title CPU split of a session (a lower bound: see the module doc), and
    the context switches of each title's threads between start() and stop()
    (threads alive at stop(); a lower bound too: a thread or process that ended
    meanwhile takes its count with it)."""

    def __init__(self, session, interval=0.05):
        self.session = session
        self.interval = interval
        self.first = {}
        self.last = {}
        self.titles = {}
        self.switches_first = {}     # pid -> thread_switches() at start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self, initial=False):
        for pid, (_, _, own, _, comm) in session_members(self.session).items():
            if pid not in self.first:
                self.first[pid] = own if initial else 0
            if pid == self.session or self.titles.get(pid, "master") == "master":
                # a child forked without exec keeps the master's title until it sets its own
                self.titles[pid] = title(pid, comm)
            self.last[pid] = own

    def _run(self):
        while not self._stop.wait(self.interval):
            self._read()

    def start(self):
        self._read(initial=True)
        self.switches_first = {pid: thread_switches(pid) for pid in self.first}
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join()
        self._read()
        split, processes, switches = {}, {}, {}
        for pid, name in self.titles.items():
            split[name] = split.get(name, 0) + (self.last[pid] - self.first[pid]) / CLOCK_TICKS
            processes[name] = processes.get(name, 0) + 1
            before = self.switches_first.get(pid, {})
            switches[name] = switches.get(name, 0) + sum(
                count - before.get(tid, 0) for tid, count in thread_switches(pid).items())
        return split, processes, switches


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_tool(command, env=None):
    done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=120, env=env)
    if done.returncode != 0:
        raise BenchError(f"{shlex.join(command)} failed ({done.returncode}): "
                         f"{done.stdout}{done.stderr}")
    return done


def kill_session(session, timeout=10):
    deadline = time.monotonic() + timeout
    while session_members(session) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in session_members(session):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def connections_to(port):
    """Established TCP connections to 127.0.0.1:port (from /proc/net/tcp)."""
    count = 0
    with open("/proc/net/tcp", encoding="ascii") as table:
        next(table)
        for row in table:
            fields = row.split()
            if fields[3] == "01" and int(fields[2].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


# --- the sink ------------------------------------------------------------------------------
class Sink:
    """``smtp-sink -c`` on 127.0.0.1: counts sessions, QUITs and messages; stores nothing."""

    COUNTERS = re.compile(rb"sess=(\d+) quit=(\d+) mesg=(\d+)\r")

    def __init__(self, directory):
        self.directory = directory
        self.port = None
        self.process = None
        self.path = os.path.join(directory, "smtp-sink.counters")

    def start(self):
        program = shutil.which("smtp-sink", path=os.pathsep.join([POSTFIX_SBIN, os.environ.get("PATH", "")]))
        if program is None:
            raise BenchError("smtp-sink not found (install Debian's postfix package)")
        for _ in range(3):
            self.port = free_port()
            with open(self.path, "wb") as output:
                self.process = subprocess.Popen(
                    [program, "-u", "nobody", "-c", f"127.0.0.1:{self.port}", "256"],
                    stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and self.process.poll() is None:
                if self._listening():
                    return self
                time.sleep(0.02)
            self.stop()
        raise BenchError("smtp-sink did not start")

    def _listening(self):
        with open("/proc/net/tcp", encoding="ascii") as table:
            next(table)
            return any(row.split()[3] == "0A" and int(row.split()[1].rsplit(":", 1)[1], 16) == self.port
                       for row in table)

    @property
    def nexthop(self):
        return f"[127.0.0.1]:{self.port}"

    def cpu(self):
        """The sink's own CPU seconds so far (it is one process)."""
        stat = proc_stat(self.process.pid)
        return stat[2] / CLOCK_TICKS if stat else 0.0

    def counters(self):
        """(sessions ended, QUITs, messages) so far."""
        with open(self.path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 200))
            tail = handle.read()
        found = self.COUNTERS.findall(tail)
        return tuple(int(v) for v in found[-1]) if found else (0, 0, 0)

    def messages(self):
        return self.counters()[2]

    def idle(self, timeout=15):
        """Wait until no connection is open (cached ones time out) and the counters settle."""
        deadline = time.monotonic() + timeout
        while connections_to(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.2)
        return self.counters()

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def message_bytes(number, size, queue_id=""):
    header = (f"From: Bench Sender <{SENDER}>\r\nTo: <rcpt{number}@bench.example>\r\n"
              f"Subject: {SUBJECT} {number}\r\n"
              f"Message-Id: <{queue_id or number}.{number}@client.example>\r\n"
              f"Date: Thu, 01 Jan 2025 00:00:00 +0000\r\n\r\n").encode()
    line = b"The quick brown fox jumps over the lazy dog; benchmark body text 0123456789.\r\n"
    body = (line * (size // len(line) + 1))[:max(0, size - len(header) - 2)]
    return header + body.rsplit(b"\r\n", 1)[0] + b"\r\n"


# --- Postfix ------------------------------------------------------------------------------
class PostfixRelay:
    name = "Postfix"

    def __init__(self, sink):
        self.sink = sink
        self.root = None
        self.master_pid = None
        self.smtpd_port = None
        self.version = "?"

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def tool(self, program, *args):
        return [os.path.join(POSTFIX_SBIN, program), "-c", self.path("etc"), *args]

    def start(self):
        if not os.path.exists(os.path.join(POSTFIX_DAEMONS, "master")):
            raise BenchError(f"{POSTFIX_DAEMONS}/master not found (install Debian's postfix package)")
        self.root = tempfile.mkdtemp(prefix="pcbench-postfix-")
        os.chmod(self.root, 0o755)
        for directory in ("etc", "queue", "data"):
            os.makedirs(self.path(directory), mode=0o755)
        shutil.chown(self.path("data"), "postfix", "postfix")
        self.smtpd_port = free_port()
        settings = dict(POSTFIX_MAIN_CF)
        settings.update(queue_directory=self.path("queue"), data_directory=self.path("data"),
                        maillog_file=self.path("maillog"),
                        maillog_file_prefixes=os.path.dirname(self.root),
                        relayhost=self.sink.nexthop,
                        header_checks=f"regexp:{self.path('etc', 'header_checks')}")
        with open(self.path("etc", "header_checks"), "w") as handle:
            handle.write(f"/^Subject: {SUBJECT} /  HOLD\n")
        with open(self.path("etc", "main.cf"), "w") as handle:
            handle.writelines(f"{name} = {value}\n" for name, value in settings.items())
        with open(self.path("etc", "master.cf"), "w") as handle:
            handle.write(f"127.0.0.1:{self.smtpd_port} inet n - n - - smtpd\n" + POSTFIX_MASTER_CF)
        run_tool([os.path.join(POSTFIX_SBIN, "postfix"), "-c", self.path("etc"), "start"])
        deadline = time.monotonic() + 20
        while self.master_pid is None:
            try:
                with open(self.path("queue", "pid", "master.pid")) as handle:
                    self.master_pid = int(handle.read().split()[0])
            except (OSError, ValueError, IndexError):
                if time.monotonic() > deadline:
                    raise BenchError(f"Postfix did not start:\n{self.maillog()}") from None
                time.sleep(0.05)
        self.version = run_tool([os.path.join(POSTFIX_SBIN, "postconf"), "-h", "-c", self.path("etc"),
                                 "mail_version"]).stdout.strip()
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.smtpd_port), 1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchError(f"Postfix smtpd does not listen:\n{self.maillog()}") from None
                time.sleep(0.05)
        return self

    @property
    def session(self):
        return self.master_pid

    def maillog(self):
        try:
            with open(self.path("maillog"), errors="replace") as handle:
                return handle.read()
        except OSError:
            return ""

    def count(self, queue):
        return sum(len(files) for _, _, files in os.walk(self.path("queue", queue)))

    def queue_held(self, count, size):
        smtp = smtplib.SMTP("127.0.0.1", self.smtpd_port, timeout=60)
        try:
            for number in range(count):
                smtp.sendmail(SENDER, [f"rcpt{number}@bench.example"], message_bytes(number, size))
        finally:
            smtp.quit()
        deadline = time.monotonic() + 120
        while self.count("hold") < count or any(self.count(q) for q in ("maildrop", "incoming", "active")):
            if time.monotonic() > deadline or self.count("deferred"):
                raise BenchError(f"Postfix did not hold the messages: hold={self.count('hold')}\n"
                                 f"{self.maillog()[-3000:]}")
            time.sleep(0.05)

    def release(self):
        run_tool(self.tool("postsuper", "-H", "ALL"))
        run_tool(self.tool("postqueue", "-f"))
        return "postsuper -H ALL; postqueue -f"

    def empty(self):
        return not any(self.count(q) for q in QUEUES)

    def stop(self):
        if self.root is None:
            return
        try:
            subprocess.run([os.path.join(POSTFIX_SBIN, "postfix"), "-c", self.path("etc"), "stop"],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
        except subprocess.TimeoutExpired:
            pass
        if self.master_pid:
            kill_session(self.master_pid)
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None


# --- postclient ---------------------------------------------------------------------------
class PostclientRelay:
    name = "postclient"
    syslog_name = "pcbench"

    def __init__(self, sink, profile_dir=None, settings=()):
        self.sink = sink
        self.profile_dir = profile_dir
        self.settings = list(settings)      # NAME=VALUE, after --set (a --compare variant)
        self.root = None
        self.process = None
        self.release_method = None

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def command(self, *args):
        """The ``postclient`` command an operator runs (the virtualenv's console
        script when there is one; ``python -m postclient`` starts runpy first).
        A profiled relay runs from this tree (profile_hook.py), and so do its tools."""
        python = sys.executable if self.profile_dir else PYTHON
        script = os.path.join(os.path.dirname(python), "postclient")
        program = [script] if os.access(script, os.X_OK) else [python, "-m", "postclient"]
        return [*program, "-c", self.path("etc"), *args]

    def start(self):
        # short: UNIX socket paths under the queue are limited to 107 bytes
        self.root = tempfile.mkdtemp(prefix="pcb", dir="/tmp")
        os.makedirs(self.path("etc"))
        with open(self.path("etc", "main.cf"), "w") as handle:
            handle.write(f"queue_directory = {self.path('q')}\nmaillog_file = {self.path('maillog')}\n"
                         f"syslog_name = {self.syslog_name}\nrelayhost = {self.sink.nexthop}\n"
                         f"myhostname = relay.postclient.bench\nqueue_run_delay = 1s\n"
                         f"minimal_backoff_time = 1s\nmaximal_backoff_time = 2s\n")
            for setting in [*(ARGS.set if ARGS else ()), *self.settings]:
                handle.write(setting.replace("=", " = ", 1) + "\n")
        with open(self.path("etc", "master.cf"), "w") as handle:
            handle.write(POSTCLIENT_MASTER_CF)
        open(self.path("maillog"), "w").close()
        env = dict(os.environ)
        command = self.command("start-fg")
        if self.profile_dir:
            # the hook imports postclient from this tree: the development interpreter
            env["POSTCLIENT_BENCH_PROFILE"] = self.profile_dir
            command = [sys.executable, os.path.join(ROOT, "bench", "profile_hook.py"),
                       "-c", self.path("etc"), "start-fg"]
        with open(self.path("stderr"), "wb") as stderr:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True,
                                            stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
        deadline = time.monotonic() + 20
        while "daemon started" not in self.maillog():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"postclient did not start:\n{self.maillog()}\n{self.stderr()}")
            time.sleep(0.05)
        return self

    @property
    def session(self):
        return self.process.pid

    def maillog(self):
        with open(self.path("maillog"), errors="replace") as handle:
            return handle.read()

    def stderr(self):
        try:
            with open(self.path("stderr"), errors="replace") as handle:
                return handle.read()
        except OSError:
            return ""

    def count(self, queue):
        try:
            return sum(1 for name in os.listdir(self.path("q", queue)) if not name.startswith("."))
        except FileNotFoundError:
            return 0

    def queue_held(self, count, size):
        hold = self.path("q", "hold")
        os.makedirs(hold, exist_ok=True)
        now = time.time()
        for number in range(count):
            queue_id = new_queue_id()
            queuefile.write_queue_file(hold, queue_id, sender=SENDER,
                                       recipients=[f"rcpt{number}@bench.example"],
                                       content=message_bytes(number, size, queue_id),
                                       arrival_time=now, encoding="7bit")

    def release(self):
        """postclient super -H ALL; postclient queue -f (or by hand where they are missing)."""
        if self.release_method in (None, "tools"):
            try:
                run_tool(self.command("super", "-H", "ALL"))
                run_tool(self.command("queue", "-f"))
                self.release_method = "tools"
                return "postclient super -H ALL; postclient queue -f"
            except BenchError as error:
                if self.release_method == "tools" or self.count("hold") == 0:
                    raise
                print(f"drain.py: {error}\n  releasing by hand instead", file=sys.stderr)
        self.release_method = "direct"
        now = time.time()
        for name in os.listdir(self.path("q", "hold")):
            if not name.startswith("."):
                target = self.path("q", "deferred", name)
                os.rename(self.path("q", "hold", name), target)
                os.utime(target, (now, now))
        deadline = time.monotonic() + 10
        sock = ipc.connect_unix(self.path("q", "public", "qmgr"), deadline)
        try:
            ipc.expect_protocol(sock, "qmgr", 1, deadline)
            ipc.send_message(sock, {"request": "flush"}, deadline)
        finally:
            sock.close()
        return "rename hold/ -> deferred/ + utime now; {\"request\": \"flush\"} on public/qmgr"

    def empty(self):
        return not any(self.count(q) for q in QUEUES)

    def stop(self):
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                pass
        kill_session(self.process.pid)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)
        self.process = None


# --- one drain ---------------------------------------------------------------------------------
def drain(relay, sink, messages, size):
    relay.start()
    try:
        relay.queue_held(messages, size)
        sink.idle()
        sessions_before, _, messages_before = sink.counters()
        cpu_before = session_cpu(relay.session)
        sink_before = sink.cpu()
        tools_before = children_cpu()
        sampler = CpuSampler(relay.session).start()
        release = {}

        def release_mail():             # in a thread, so that the first delivery is seen
            try:
                release["method"] = relay.release()
            except BaseException as error:
                release["error"] = error
            release["done"] = time.perf_counter()

        releaser = threading.Thread(target=release_mail, daemon=True)
        started = time.perf_counter()
        releaser.start()
        first = None
        marks = {}                      # share of the messages -> seconds since the release
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while True:
            if "error" in release:
                raise BenchError(f"{relay.name}: release failed: {release['error']}")
            delivered = sink.messages() - messages_before
            if first is None and delivered > 0:
                first = time.perf_counter()
            for share in (0.1, 0.5, 0.9):
                if share not in marks and delivered >= share * messages:
                    marks[share] = time.perf_counter() - started
            if delivered >= messages:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"{relay.name}: {delivered} of {messages} delivered after "
                                 f"{DRAIN_TIMEOUT}s\n{relay.maillog()[-3000:]}")
            time.sleep(0.005)
        last = time.perf_counter()
        releaser.join()
        if "error" in release:
            raise BenchError(f"{relay.name}: release failed: {release['error']}")
        method, released = release["method"], release["done"]
        while not relay.empty():
            if time.monotonic() > deadline:
                raise BenchError(f"{relay.name}: queue not empty\n{relay.maillog()[-3000:]}")
            time.sleep(0.005)
        ended = time.perf_counter()
        cpu = session_cpu(relay.session) - cpu_before
        sink_cpu = sink.cpu() - sink_before
        tools = children_cpu() - tools_before
        split, processes, switches = sampler.stop()
        sessions_after, _, messages_after = sink.idle()
        if messages_after - messages_before != messages:
            raise BenchError(f"{relay.name}: the sink counted {messages_after - messages_before} "
                             f"messages for {messages} queued")
        seconds = ended - started
        return {
            "relay": relay.name, "messages": messages, "seconds": seconds,
            "rate": messages / seconds, "cpu": cpu, "cpu_ms": cpu * 1000 / messages,
            "tools_cpu": tools, "release": released - started,
            "first": (first or last) - started, "last": last - started,
            "connections": sessions_after - sessions_before, "split": split, "processes": processes,
            "switches": switches,
            "marks": marks, "sink_cpu": sink_cpu,
            "method": method,
            "version": getattr(relay, "version", None),
        }
    finally:
        relay.stop()


# --- profile -------------------------------------------------------------------------------
def _short(function):
    filename, line, name = function
    if filename == "~":
        return name                                   # a builtin: "<method 'recv' ...>"
    if ROOT in filename:
        filename = os.path.relpath(filename, ROOT)
    else:
        filename = os.path.basename(filename)
    return f"{filename}:{line}({name})"


def summarize_profile(directory, top=25):
    """Merge each service's profiles; write DIR/<service>.prof and DIR/summary.txt.

    Returns {service: (processes, profiled seconds, [(own s, cumulative s, calls,
    function)] by own time, [...] postclient functions by cumulative time)}.
    """
    out = io.StringIO()
    by_service = {}
    for path in glob.glob(os.path.join(directory, "*.*.prof")):
        by_service.setdefault(os.path.basename(path).split(".")[0], []).append(path)
    summary = {}
    for service, paths in sorted(by_service.items()):
        stats = pstats.Stats(paths[0], stream=out)
        for path in paths[1:]:
            stats.add(path)
        stats.dump_stats(os.path.join(directory, f"{service}.prof"))
        out.write(f"\n===== {service}: {len(paths)} process(es), merged =====\n")
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top * 2)
        rows = [(tt, ct, nc, _short(function))
                for function, (cc, nc, tt, ct, callers) in stats.stats.items()]
        own = sorted(rows, key=lambda row: -row[0])[:10]
        cumulative = sorted((row for row in rows if row[3].startswith("postclient/")),
                            key=lambda row: -row[1])[:20]
        summary[service] = (len(paths), stats.total_tt, own, cumulative)
    with open(os.path.join(directory, "summary.txt"), "w") as handle:
        handle.write(out.getvalue())
    return summary


# --- results ---------------------------------------------------------------------------------
def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{model}, {os.cpu_count()} cores, Linux {platform.release()}, "
            f"Python {platform.python_version()}")


def render(rounds, arguments, profile=None):
    by_relay = {}
    for result in rounds:
        by_relay.setdefault(result["relay"], []).append(result)

    def median(relay, key):
        return statistics.median(r[key] for r in by_relay[relay])

    lines = ["## Drain", "",
             "Written by `bench/drain.py` (see its docstring for the method).", "",
             f"- Command: `{arguments}` (from the project root, as root)",
             f"- Machine: {machine()}; Postfix {by_relay.get('Postfix', [{}])[0].get('version', '?')} "
             f"(Debian package)",
             f"- postclient: {POSTCLIENT_RUNS_ON}",
             f"- Date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
             f"- {rounds[0]['messages']} messages of {ARGS.size} bytes, one recipient each, one "
             "destination, held then released into one `smtp-sink -c` on 127.0.0.1 shared by both "
             "relays; timed from the release command to an empty queue.",
             "- CPU: user+system of every process of the relay's session (master and all its "
             "children, dead ones through the master's cutime/cstime) during the drain; the "
             "release tools' own CPU is in the \"tools\" column, the sink's in its own.", "",
             "| relay | round | drain s | msg/s | CPU s | CPU ms/msg | tools CPU s | release s "
             "| first delivery s | 50% / 90% / 100% delivered s | sink CPU s | SMTP connections "
             "| release |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for relay, results in by_relay.items():
        for index, r in enumerate(results, 1):
            marks = " / ".join(f"{r['marks'][share]:.2f}" for share in (0.5, 0.9)) + f" / {r['last']:.2f}"
            lines.append(f"| {relay} | {index} | {r['seconds']:.2f} | {r['rate']:.0f} | {r['cpu']:.2f} | "
                         f"{r['cpu_ms']:.2f} | {r['tools_cpu']:.2f} | {r['release']:.2f} | {r['first']:.2f} | "
                         f"{marks} | {r['sink_cpu']:.2f} | {r['connections']} | `{r['method']}` |")
    if "Postfix" in by_relay and "postclient" in by_relay:
        speed = median("postclient", "rate") / median("Postfix", "rate")
        cpu = median("postclient", "cpu_ms") / median("Postfix", "cpu_ms")
        lines += ["", "| ratio (medians) | postclient / Postfix |", "|---|---|",
                  f"| messages per second | {speed:.2f}x |",
                  f"| CPU per message | {cpu:.2f}x |",
                  f"| goal: postclient drains >= 2x as fast | {'met' if speed >= 2 else 'NOT met'} |"]
    lines += ["", "CPU by process (sampled every 50 ms: a lower bound, last round of each relay), "
              "and the context switches of its threads alive at the end (a lower bound too):", "",
              "| relay | process | processes seen | CPU s | ms/msg | context switches/msg |",
              "|---|---|---|---|---|---|"]
    for relay, results in by_relay.items():
        r = results[-1]
        for name, seconds in sorted(r["split"].items(), key=lambda item: -item[1]):
            if seconds >= 0.005:
                lines.append(f"| {relay} | {name} | {r['processes'][name]} | {seconds:.2f} | "
                             f"{seconds * 1000 / r['messages']:.2f} | "
                             f"{r['switches'].get(name, 0) / r['messages']:.1f} |")
        lines.append(f"| {relay} | all | | | | {sum(r['switches'].values()) / r['messages']:.1f} |")
    if profile:
        profiled, summary = profile
        lines += ["", "### Profile of postclient's drain", "",
                  f"A separate drain of {profiled['messages']} messages under cProfile with a CPU "
                  f"clock (time.thread_time; bench/profile_hook.py), not used for the numbers above: "
                  f"{profiled['rate']:.0f} msg/s, {profiled['cpu_ms']:.2f} CPU ms/msg under the "
                  f"profiler.  Merged statistics per service and longer listings: "
                  f"`{ARGS.profile}/<service>.prof`, `summary.txt`.", ""]
        for service, (count, seconds, own, cumulative) in summary.items():
            lines += [f"**{service}** ({count} process(es), {seconds:.2f} s profiled CPU, "
                      f"{seconds * 1000 / profiled['messages']:.2f} ms/msg)", "",
                      "| own s | cumulative s | calls | function (top by own time) |", "|---|---|---|---|"]
            lines += [f"| {tt:.2f} | {ct:.2f} | {nc} | `{name}` |" for tt, ct, nc, name in own]
            lines += ["", "| own s | cumulative s | calls | postclient function (top by cumulative time) |",
                      "|---|---|---|---|"]
            lines += [f"| {tt:.2f} | {ct:.2f} | {nc} | `{name}` |" for tt, ct, nc, name in cumulative]
            lines.append("")
    return "\n".join(lines) + "\n"


def write_results(section):
    try:
        with open(RESULTS) as handle:
            text = handle.read()
    except FileNotFoundError:
        text = "# Benchmark results\n"
    pattern = re.compile(r"^## Drain\n.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(RESULTS, "w") as handle:
        handle.write(text.rstrip("\n") + "\n")


def print_result(r):
    print(f"{r['relay']:>10}: {r['messages']} messages in {r['seconds']:.2f}s = {r['rate']:.0f} msg/s, "
          f"CPU {r['cpu']:.2f}s = {r['cpu_ms']:.2f} ms/msg (tools {r['tools_cpu']:.2f}s), "
          f"release {r['release']:.2f}s, first delivery {r['first']:.2f}s, {r['connections']} SMTP connections")
    print("            delivered: " + ", ".join(f"{share:.0%} at {seconds:.2f}s"
                                              for share, seconds in sorted(r["marks"].items()))
          + f", 100% at {r['last']:.2f}s; the sink's CPU {r['sink_cpu']:.2f}s")
    print("            " + ", ".join(f"{name} {seconds:.2f}s ({r['processes'][name]})" for name, seconds
                                      in sorted(r["split"].items(), key=lambda item: -item[1])
                                      if seconds >= 0.005))
    print(f"            context switches per message: {sum(r['switches'].values()) / r['messages']:.1f} ("
          + ", ".join(f"{name} {count / r['messages']:.1f}" for name, count
                      in sorted(r["switches"].items(), key=lambda item: -item[1]) if count) + ")")


def compile_postclient():
    """Byte-compile postclient first, as an installed package is: with
    PYTHONDONTWRITEBYTECODE set (as on some machines), every release tool and
    every lazily imported module would otherwise be compiled again in each
    process, a cost no installed relay pays.  (__pycache__ is ignored by git.)"""
    import compileall
    compileall.compile_dir(os.path.join(ROOT, "postclient"), quiet=1)


def source_files():
    """The files a checkout of this tree has, as they are now (committed or
    not): what an install is made from.  Never build outputs: a build/ or a
    stray compiled module of an earlier build would go into the package."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                                cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        raise SystemExit("drain.py: cannot list the source files (git ls-files); "
                         "use --python dev") from None
    return sorted(name for name in listed.splitlines()
                  if os.path.isfile(os.path.join(ROOT, name)))


def sources_digest(names):
    import hashlib
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0")
        with open(os.path.join(ROOT, name), "rb") as handle:
            digest.update(handle.read() + b"\0")
    return digest.hexdigest()


def prepare_postclient(choice):
    """Set PYTHON and POSTCLIENT_RUNS_ON: postclient installed for ``choice``
    (an interpreter; "system" for /usr/bin/python3), or the development tree
    ("dev", or when the install cannot be made)."""
    global PYTHON, POSTCLIENT_RUNS_ON
    interpreter = SYSTEM_PYTHON if choice == "system" else choice
    if choice == "dev" or not os.access(interpreter, os.X_OK):
        if choice not in ("dev", "system"):
            raise SystemExit(f"drain.py: --python {choice}: not an executable")
        compile_postclient()
        return
    version = subprocess.run([interpreter, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True).stdout.strip()
    python = os.path.join(INSTALL_DIR, "bin", "python")
    stamp = os.path.join(INSTALL_DIR, ".postclient-install")
    names = source_files()
    wanted = f"{os.path.realpath(interpreter)} {version} {sources_digest(names)}"
    try:
        with open(stamp) as handle:
            current = handle.read()
    except OSError:
        current = None
    if current != wanted:
        print(f"drain.py: installing postclient for {interpreter} (Python {version}) "
              f"in {INSTALL_DIR}", file=sys.stderr)
        shutil.rmtree(INSTALL_DIR, ignore_errors=True)
        source = tempfile.mkdtemp(prefix="pcbench-source-")
        try:
            for name in names:          # a clean copy: pip builds inside the tree it gets
                os.makedirs(os.path.join(source, os.path.dirname(name)), exist_ok=True)
                shutil.copy2(os.path.join(ROOT, name), os.path.join(source, name))
            subprocess.run([interpreter, "-m", "venv", INSTALL_DIR], check=True,
                           stdout=subprocess.DEVNULL)
            subprocess.run([python, "-m", "pip", "install", "-q", source], check=True,
                           stdout=subprocess.DEVNULL)
        except (OSError, subprocess.CalledProcessError) as error:
            if choice != "system":
                raise SystemExit(f"drain.py: cannot install postclient for {interpreter}: {error}")
            print(f"drain.py: cannot install postclient for {interpreter} ({error}); "
                  "the development tree runs instead", file=sys.stderr)
            shutil.rmtree(INSTALL_DIR, ignore_errors=True)
            compile_postclient()
            return
        finally:
            shutil.rmtree(source, ignore_errors=True)
        with open(stamp, "w") as handle:
            handle.write(wanted)
    PYTHON = python
    POSTCLIENT_RUNS_ON = (f"installed with `pip install .` in a virtualenv of {interpreter} "
                          f"(Python {version})")


def main(argv=None):
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=5120)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=("postfix", "postclient"))
    parser.add_argument("--profile", metavar="DIR", help="also run one postclient drain under cProfile")
    parser.add_argument("--no-results", action="store_true", help="do not write bench/RESULTS.md")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a main.cf setting for postclient's instance (experiments)")
    parser.add_argument("--python", default="system", metavar="PATH|dev",
                        help="postclient's interpreter: installed for PATH (default "
                             f"{SYSTEM_PYTHON}), or 'dev' for the development tree as it is")
    parser.add_argument("--compare", action="append", default=[], metavar="SETTINGS",
                        help="postclient only, side by side: each round drains once per "
                             "--compare, with its NAME=VALUE settings (comma-separated; "
                             "'' for none); prints the medians, writes no results")
    ARGS = parser.parse_args(argv)
    if ARGS.compare:
        return compare(ARGS.compare)
    if os.geteuid() != 0:
        raise SystemExit("drain.py: run as root (smtp-sink -u nobody, a Postfix instance)")
    arguments = shlex.join(["python", "bench/drain.py", *(sys.argv[1:] if argv is None else argv)])
    prepare_postclient(ARGS.python)
    work = tempfile.mkdtemp(prefix="pcbench-sink-")
    os.chmod(work, 0o755)
    sink = Sink(work).start()
    results = []
    try:
        for _ in range(ARGS.rounds):
            if ARGS.only != "postclient":
                results.append(drain(PostfixRelay(sink), sink, ARGS.messages, ARGS.size))
                print_result(results[-1])
            if ARGS.only != "postfix":
                results.append(drain(PostclientRelay(sink), sink, ARGS.messages, ARGS.size))
                print_result(results[-1])
        profile = None
        if ARGS.profile:
            directory = os.path.abspath(ARGS.profile)
            shutil.rmtree(directory, ignore_errors=True)
            os.makedirs(directory)
            profiled = drain(PostclientRelay(sink, profile_dir=directory), sink, ARGS.messages, ARGS.size)
            print("under cProfile:")
            print_result(profiled)
            profile = (profiled, summarize_profile(directory))
            print(f"profile: {directory}/summary.txt")
    finally:
        sink.stop()
        shutil.rmtree(work, ignore_errors=True)
    section = render(results, arguments, profile)
    print(section)
    if not ARGS.no_results:
        write_results(section)
    return 0


def compare(variants):
    """--compare: alternate postclient drains with different settings, round by round,
    into one sink, so that the machine's drift touches every variant alike."""
    if os.geteuid() != 0:
        raise SystemExit("drain.py: run as root (smtp-sink -u nobody)")
    prepare_postclient(ARGS.python)
    work = tempfile.mkdtemp(prefix="pcbench-sink-")
    os.chmod(work, 0o755)
    sink = Sink(work).start()
    runs = {variant: [] for variant in variants}
    try:
        for number in range(ARGS.rounds):
            for variant in variants:
                settings = [item.strip() for item in variant.split(",") if item.strip()]
                result = drain(PostclientRelay(sink, settings=settings), sink, ARGS.messages,
                               ARGS.size)
                runs[variant].append(result)
                print(f"{variant or '(defaults)'} round {number + 1}: {result['rate']:.0f} msg/s, "
                      f"{result['cpu_ms']:.2f} CPU ms/msg, last delivery to empty queue "
                      f"{result['seconds'] - result['last']:.2f} s", flush=True)
    finally:
        sink.stop()
        shutil.rmtree(work, ignore_errors=True)
    print("\n| settings | msg/s (median) | CPU ms/msg (median) | last delivery to empty queue s "
          "(median) | rounds |\n|---|---|---|---|---|")
    for variant, results in runs.items():
        print(f"| `{variant or '(defaults)'}` | {statistics.median(r['rate'] for r in results):.0f} | "
              f"{statistics.median(r['cpu_ms'] for r in results):.2f} | "
              f"{statistics.median(r['seconds'] - r['last'] for r in results):.2f} | "
              f"{len(results)} |")
    return 0


ARGS = None

if __name__ == "__main__":
    sys.exit(main())
