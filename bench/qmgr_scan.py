"""How long a deferred scan holds the queue manager's loop: one go against steps.

    python bench/qmgr_scan.py [--files N (100000)] [--rounds R (3)]

(from the project root).  N empty files in a temporary deferred/, none of
them due (mtime an hour ahead), as in a relay with a large deferred queue
between two queue runs.  Anchor: the whole directory looked at in one go,
as the queue manager did before qmgr_scan.py (list it, sort it, one stat
per file), which held its loop that long.  Measured: a timed scan with
qmgr_scan.QueueScan, one step() at a time as the loop runs it: the longest
step is how long the loop is held now, and the total is the same work
spread over the passes.  The ratio anchor / longest step is what counts.
Results: bench/RESULTS.md, "## Queue scan".
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from postclient.queue.qmgr_scan import QueueScan  # noqa: E402


def one_go(directory, now):
    """The anchor: every entry listed, sorted and stat()ed in one call."""
    due = []
    for name in sorted(n for n in os.listdir(directory) if not n.startswith(".")):
        if os.stat(os.path.join(directory, name)).st_mtime <= now:
            due.append(name)
    return due


def stepped(directory, now):
    """(longest step, total, steps) of a due-only QueueScan."""
    scan = QueueScan(directory)
    scan.request(due=True)
    longest = total = 0.0
    steps = 0
    while scan.running:
        started = time.perf_counter()
        scan.step(now)
        spent = time.perf_counter() - started
        longest, total, steps = max(longest, spent), total + spent, steps + 1
    return longest, total, steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="scanbench")
    try:
        later = time.time() + 3600
        for number in range(args.files):
            path = os.path.join(directory, f"Q{number:010d}")
            with open(path, "wb"):
                pass
            os.utime(path, (later, later))
        print(f"{args.files} deferred files, none due")
        print("| round | one go s | longest step ms | steps | all steps s | one go / longest step |")
        print("|---|---|---|---|---|---|")
        for number in range(1, args.rounds + 1):
            now = time.time()
            started = time.perf_counter()
            assert one_go(directory, now) == []
            anchor = time.perf_counter() - started
            longest, total, steps = stepped(directory, now)
            print(f"| {number} | {anchor:.3f} | {longest * 1000:.1f} | {steps} | {total:.3f} "
                  f"| {anchor / longest:.0f}x |")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
