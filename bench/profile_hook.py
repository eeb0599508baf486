"""Run ``postclient`` with cProfile in every service process (bench/drain.py --profile only).

    python bench/profile_hook.py -c DIR start-fg       (with POSTCLIENT_BENCH_PROFILE=OUTDIR)

The master forks its children without exec, so patching the child skeleton
here, before the master starts, reaches every service process: each child
runs under its own cProfile.Profile and writes ``OUTDIR/<service>.<pid>.prof``
when it ends normally (max_use, max_idle, or the master stopping; a killed
process writes nothing).  Threads are profiled too and merged into their
process's file, since cProfile only sees the thread that enabled it: the
queue manager's file worker threads, and the serving threads of a threaded
agent (smtp_agent_threads).
The master itself is not profiled.  Nothing in postclient is changed: this
is a wrapper around ``postclient.cli.main.main``.

The profilers count CPU time (time.thread_time: each thread's own CPU, so
waiting for a socket, a disk or the GIL costs nothing) unless
POSTCLIENT_BENCH_PROFILE_TIMER=wall asks for cProfile's default wall clock.
"""

import cProfile
import os
import pstats
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from postclient.cli.main import main  # noqa: E402
from postclient.queue import qmgr, qmgr_files  # noqa: E402
from postclient.server import skeleton  # noqa: E402

OUTPUT = os.environ.get("POSTCLIENT_BENCH_PROFILE")
WALL = os.environ.get("POSTCLIENT_BENCH_PROFILE_TIMER") == "wall"


def _profiler():
    return cProfile.Profile() if WALL else cProfile.Profile(time.thread_time)
_thread_profiles = []
_lock = threading.Lock()


def _profiled_thread(original):
    """A method that runs as a thread's whole body, profiled and merged at the child's end."""
    def body(self, *args):
        profile = _profiler()
        profile.enable()
        try:
            return original(self, *args)
        finally:
            profile.disable()
            with _lock:
                _thread_profiles.append(profile)
    return body


def _profiled_child(original):
    def child(start):
        profile = _profiler()
        profile.enable()
        try:
            return original(start)
        finally:
            profile.disable()
            try:
                stats = pstats.Stats(profile)
                with _lock:
                    for extra in _thread_profiles:
                        try:
                            stats.add(extra)
                        except TypeError:       # a thread that recorded nothing
                            pass
                stats.dump_stats(os.path.join(OUTPUT, f"{start.service.name}.{os.getpid()}.prof"))
            except Exception as error:          # never break the child's exit
                print(f"profile_hook: {error}", file=sys.stderr)
    return child


if OUTPUT:
    os.makedirs(OUTPUT, exist_ok=True)
    skeleton._child = _profiled_child(skeleton._child)
    qmgr.QueueManager._deliver = _profiled_thread(qmgr.QueueManager._deliver)
    qmgr_files.FileWorker._run = _profiled_thread(qmgr_files.FileWorker._run)
    skeleton._Pool.worker = _profiled_thread(skeleton._Pool.worker)

if __name__ == "__main__":
    sys.exit(main())
