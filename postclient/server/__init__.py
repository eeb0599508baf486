"""The child side of the master: the skeleton every service runs in.

  skeleton.py  ServiceContext and the child's life: title, logging, signals,
               accept loop, max_use, max_idle, lifeline, daemon_timeout watchdog
  registry.py  master.cf command names -> service modules and their mode
  echo.py      the "echo" health-check service (diagnostics and tests)
"""
