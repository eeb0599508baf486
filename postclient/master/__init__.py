"""The master process: runs the master.cf services, on demand, for ever.

One concern per module, as in Postfix's src/master:

  master.py   the main loop (wait -> reap -> manage), signals, reload, stop
  conf.py     which master.cf services the master runs
  service.py  per-service state: children, availability, generation, throttle
  avail.py    when to watch a listen socket and spawn another child
  spawn.py    birth (fork, no exec) and death (reap, throttle) of children
  status.py   reading the children's status reports
  proto.py    the status record shared with the child skeleton
  listen.py   the queue directories and the services' listen sockets
  wakeup.py   master.cf wakeup timers
  pidfile.py  $queue_directory/pid/master.pid and its lock
  notify.py   sd_notify (READY=1, RELOADING=1, STOPPING=1)
  daemon.py   detaching from the terminal for ``postclient start``
  system.py   the one object through which fork, waitpid, kill and the clock go

The children run postclient.server.skeleton.  docs/master.md is the
operations guide.
"""
