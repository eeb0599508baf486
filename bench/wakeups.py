"""What one wakeup costs on this machine: round trips between threads and processes.

    python bench/wakeups.py [--trips N (20000)]

(from the project root).  Each line is N round trips of one byte or one
object, and the CPU both sides used per round trip (time.process_time()
for threads, which counts every thread of this process; getrusage() of the
child for processes).  A round trip is two wakeups: each side sleeps until
the other has sent.

Why: the drain benchmark (bench/drain.py) is CPU-bound, and on a virtual
machine a context switch costs tens of microseconds of CPU, as much as a
good part of a message's Python.  Every handoff the relay makes per message
(between the queue manager's threads, from the queue manager to an agent,
from an agent to the server) pays it; drain.py reports the switches per
message of each process.  Results: bench/RESULTS.md, "Drain notes".
"""

import argparse
import os
import queue
import resource
import socket
import threading
import time


def thread_queue(trips):
    """Two threads handing an object back and forth through queue.SimpleQueue."""
    there, back = queue.SimpleQueue(), queue.SimpleQueue()

    def echo():
        for _ in range(trips):
            back.put(there.get())

    return _threaded(trips, echo, lambda n: (there.put(n), back.get()))


def thread_socket(trips):
    """Two threads of one process echoing a byte over a socketpair."""
    near, far = socket.socketpair()

    def echo():
        for _ in range(trips):
            far.send(far.recv(1))

    try:
        return _threaded(trips, echo, lambda n: (near.send(b"x"), near.recv(1)))
    finally:
        near.close()
        far.close()


def _threaded(trips, echo, trip):
    helper = threading.Thread(target=echo)
    helper.start()
    started = time.process_time()
    for n in range(trips):
        trip(n)
    used = time.process_time() - started
    helper.join()
    return used


def process_socket(trips):
    """Two processes echoing a byte over a socketpair."""
    near, far = socket.socketpair()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = os.fork()
    if child == 0:
        near.close()
        for _ in range(trips):
            far.send(far.recv(1))
        os._exit(0)
    far.close()
    started = time.process_time()
    for _ in range(trips):
        near.send(b"x")
        near.recv(1)
    used = time.process_time() - started
    os.waitpid(child, 0)
    near.close()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used + (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trips", type=int, default=20000)
    trips = parser.parse_args().trips
    for name, measure in (("threads, queue.SimpleQueue", thread_queue),
                          ("threads, socketpair", thread_socket),
                          ("processes, socketpair", process_socket)):
        used = measure(trips)
        print(f"{name:28s} {used * 1e6 / trips:6.1f} us CPU per round trip (both sides)")


if __name__ == "__main__":
    main()
