"""CPU cost of one mail transaction on an established session (protocol core + driver).

    .venv/bin/python bench/transaction_cpu.py [-n 2000] [--size 5120] [--profile FILE]
                                              [--smtplib] [--continue] [--python-agent]

Starts ``smtp-sink`` (Debian package postfix) on a free local port, opens one
session with driver.run_session(quit_after=False), then runs ``-n``
transactions of a ``--size`` byte message with one recipient on it the way
an agent reuses a session it kept (reuse.py): Client.resume() from the
capabilities dict, driver.probe() (RSET), driver.run_session(quit_after=False);
with ``--continue`` Client.continue_ready() replaces the probe, as for the
next message of a batched request.
Reported per transaction, in time.process_time() (this process only; the
sink is another process):

  cycle  resume + probe + run_session, what a reused session costs (and the
         part of it spent in user mode: the rest is the kernel's, mostly
         loopback TCP on send())
  txn    run_session alone: MAIL, RCPT, DATA, content, "."

``--smtplib`` measures smtplib's sendmail() over one connection to the same
sink, for comparison.  ``--profile FILE`` writes a cProfile of the loop.
``--python-agent`` loads postclient/smtp/ from its .py files where mypyc
compiled it (setup.py), the codec staying compiled: run the script with and
without it, in turn, to compare the two builds.
"""

import argparse
import cProfile
import os
import pstats
import shutil
import smtplib
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import postclient.smtp  # noqa: E402
from postclient import extensions  # noqa: E402

if "--python-agent" in sys.argv:
    extensions.use_sources(postclient.smtp.__path__)

from postclient.config.config import Config  # noqa: E402
from postclient.smtp import driver  # noqa: E402
from postclient.smtp.commands import Envelope, Rcpt  # noqa: E402
from postclient.smtp.protocol import Client, Settings, State  # noqa: E402

SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_sink():
    port = _free_port()
    args = [SINK, "-c", "127.0.0.1:%d" % port, "1000"]
    if os.geteuid() == 0:
        args[1:1] = ["-u", "nobody"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("smtp-sink did not start")


def message(size):
    head = b"From: a@example.com\nTo: b@example.net\nSubject: bench\n\n"
    line = b"The quick brown fox jumps over the lazy dog 0123456789.\n"
    body = line * ((size - len(head)) // len(line) + 1)
    return (head + body)[:size - 1] + b"\n"


def run_core(port, count, size, profile, continued=False):
    config = Config("/nonexistent")
    settings = Settings.from_config(config, "smtp", peer="localhost[127.0.0.1]",
                                    nexthop="[127.0.0.1]")
    options = driver.SessionOptions.from_config(config, "smtp", 0.0)
    content = message(size)
    envelope = Envelope(sender="sender@example.com",
                        recipients=[Rcpt("rcpt@example.net", original="rcpt@example.net")],
                        size=len(content), encoding="7bit")
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    connection = driver.Connection(sock)
    client = Client(settings)
    driver.run_session(connection, client, envelope, content, options, quit_after=False)
    assert client.state == State.READY and client.reusable, client.state
    capabilities = client.capabilities.to_dict()
    delivered = 0
    txn_cpu = 0.0
    profiler = cProfile.Profile(time.process_time) if profile else None
    if profiler:
        profiler.enable()
    start = time.process_time()
    times = os.times()
    wall = time.perf_counter()
    for _ in range(count):
        client = Client.resume(settings, capabilities)
        if continued:
            client.continue_ready()
        elif not driver.probe(connection, client):
            raise SystemExit("RSET probe failed")
        before = time.process_time()
        events = driver.run_session(connection, client, envelope, content, options,
                                    quit_after=False)
        txn_cpu += time.process_time() - before
        for event in events:
            result = getattr(event, "result", None)
            if result is not None:
                delivered += len(result.delivered)
    cycle_cpu = time.process_time() - start
    wall = time.perf_counter() - wall
    user = os.times().user - times.user
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile)
    driver.quit_session(connection, client)
    assert delivered == count, delivered
    return cycle_cpu, txn_cpu, user, wall


def run_smtplib(port, count, size):
    content = message(size)
    smtp = smtplib.SMTP("127.0.0.1", port)
    smtp.ehlo()
    start = time.process_time()
    wall = time.perf_counter()
    for _ in range(count):
        smtp.sendmail("sender@example.com", ["rcpt@example.net"], content)
    cpu = time.process_time() - start
    wall = time.perf_counter() - wall
    smtp.quit()
    return cpu, wall


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--size", type=int, default=5120)
    parser.add_argument("--profile")
    parser.add_argument("--smtplib", action="store_true")
    parser.add_argument("--continue", dest="continued", action="store_true")
    parser.add_argument("--python-agent", action="store_true",
                        help="postclient/smtp/ from source, not the mypyc build")
    args = parser.parse_args()
    proc, port = start_sink()
    try:
        cycle, txn, user, wall = run_core(port, args.n, args.size, args.profile, args.continued)
        build = "mypyc" if extensions.is_compiled(driver) else "python"
        print(f"postclient core+driver ({build}): {args.n} x {args.size} B, "
              f"cycle {cycle / args.n * 1e6:.0f} us CPU ({user / args.n * 1e6:.0f} user), "
              f"txn {txn / args.n * 1e6:.0f} us CPU, {args.n / wall:.0f} msg/s")
        if args.smtplib:
            cpu, wall = run_smtplib(port, args.n, args.size)
            print(f"smtplib sendmail():     {args.n} x {args.size} B, "
                  f"{cpu / args.n * 1e6:.0f} us CPU, {args.n / wall:.0f} msg/s")
    finally:
        proc.terminate()
        proc.wait()
    if args.profile:
        pstats.Stats(args.profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
