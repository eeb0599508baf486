"""The queue manager's file calls, a whole task per call: the selector of two twins.

  postclient.queue._fileio_c   compiled from pyx/_fileio_c.pyx (Cython), used
                               by default: each call makes its system calls
                               with the GIL released once;
  postclient.queue._fileio_py  the pure-Python twin, the readable
                               specification, used when
                               POSTCLIENT_NO_EXTENSIONS=1 or when the compiled
                               module cannot be imported.

Exports unlink_paths(paths), load_file(old, new, limit) and
move_names(source_fd, target_fd, names, mtime) (see the twins' docstrings)
and IMPLEMENTATION ("cython" or "python").

Why: the queue manager's file worker threads (qmgr_files.py) make about a
dozen system calls per message.  Python releases the GIL around each one
and takes it back after it, while the loop's thread holds the GIL most of
the time, so each call was a hand-off between threads: futex calls and
context switches, which cost about 30 us each on the virtual machines
this project runs on.  In the drain benchmark, with removals handed over
once per loop pass (qmgr_files.py) and made here, the queue manager's
context switches fell from about 3 to 2 per message and its CPU by a
quarter (bench/RESULTS.md, "Session 9").  ``postclient super`` moves many
messages with move_names(): about 10 us less per message than a Python call
each (bench/RESULTS.md, "Session 12").
"""

from postclient.extensions import load

__all__ = ["unlink_paths", "load_file", "move_names", "IMPLEMENTATION"]

# _import_error: why the compiled twin is not in use (None when it is)
_module, IMPLEMENTATION, _import_error = load("postclient.queue._fileio_c",
                                              "postclient.queue._fileio_py")
load_file, unlink_paths, move_names = _module.load_file, _module.unlink_paths, _module.move_names
