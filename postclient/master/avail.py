"""When the master spawns: on demand, one child at a time, up to maxproc.

Exports wants_listen() and should_spawn().  Reads nothing (the limits are in
the MasterService).

As in Postfix's master_avail.c, the master does not pre-fork.  While a
service has no available child, is below its process limit and is not
throttled, the master watches the service's listen socket; when a client is
waiting there (the socket is readable), it spawns one child, which counts as
available at once.  The child reports "taken" when it accepts; if clients
are still waiting, the master sees the socket readable again and spawns
another.  A child that is available is left to accept on its own.
"""


def wants_listen(service, now):
    """Should the master watch this service's listen socket for waiting clients?"""
    return (not service.stopping and not service.removed
            and service.listen_socket is not None
            and service.available() == 0
            and service.below_limit()
            and not service.is_throttled(now))


def should_spawn(service, now, client_waiting):
    """Spawn one more child now?"""
    return client_waiting and wants_listen(service, now)
