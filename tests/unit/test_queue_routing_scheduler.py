"""Routing (transport_maps, relay_domains, relayhost) and the scheduler's decisions."""

import pytest

from postclient.config.config import Config
from postclient.queue.routing import Router, split_transport
from postclient.queue.scheduler import Scheduler


def router(tmp_path, text):
    (tmp_path / "main.cf").write_text(text)
    return Router(Config.load(str(tmp_path)))


def test_default_route_is_the_recipient_domain(tmp_path):
    route = router(tmp_path, "").route("Bob@Example.NET")
    assert (route.transport, route.nexthop) == ("smtp", "example.net")


def test_relayhost_is_the_default_nexthop(tmp_path):
    route = router(tmp_path, "relayhost = [smart.example]:587\n").route("bob@example.net")
    assert (route.transport, route.nexthop) == ("smtp", "[smart.example]:587")


def test_relay_domains_use_relay_transport(tmp_path):
    r = router(tmp_path, "relay_domains = example.org, .sub.example.com\nrelay_transport = relay\n")
    assert r.route("a@example.org").transport == "relay"
    assert r.route("a@x.sub.example.com").transport == "relay"
    assert r.route("a@sub.example.com").transport == "smtp"
    assert r.route("a@example.net").transport == "smtp"


@pytest.mark.parametrize("address, expected", [
    ("vip@example.com", ("lmtp", "unix:/run/lmtp")),          # full address
    ("vip+tag@example.com", ("lmtp", "unix:/run/lmtp")),      # address without its extension
    ("other@example.com", ("smtp", "[mx.example.com]")),       # domain, empty transport keeps smtp
    ("a@deep.parent.example", ("relay", "parent.example")),   # a parent domain (.parent.example)
    ("a@elsewhere.example", ("error", "elsewhere.example")),  # "*"
])
def test_transport_maps_lookup_order(tmp_path, address, expected):
    table = ("inline:{ vip@example.com=lmtp:unix:/run/lmtp, example.com=:[mx.example.com], "
             ".parent.example=relay:parent.example, *=error: }")
    r = router(tmp_path, f"transport_maps = {table}\nrecipient_delimiter = +\n")
    route = r.route(address)
    assert (route.transport, route.nexthop) == expected


def test_split_transport():
    assert split_transport("smtp:[host]:25") == ("smtp", "[host]:25")
    assert split_transport("relay") == ("relay", "")
    assert split_transport(":[host]") == ("", "[host]")


def make_scheduler(initial=2, limit=4, rcpt_limit=2, batch_limit=1):
    return Scheduler(initial, lambda transport: limit, lambda transport: rcpt_limit,
                     lambda transport: batch_limit)


def jobs(scheduler, message, count, nexthop="example.com"):
    made = scheduler.split(message, "smtp", nexthop, list(range(count * 2)))
    for job in made:
        scheduler.add(job)
    return made


def test_recipient_limit_splits_requests():
    scheduler = make_scheduler(rcpt_limit=2)
    made = scheduler.split("m", "smtp", "example.com", [10, 20, 30, 40, 50])
    assert [job.offsets for job in made] == [[10, 20], [30, 40], [50]]


def test_concurrency_starts_low_and_grows_with_success_up_to_the_limit():
    scheduler = make_scheduler(initial=2, limit=4)
    jobs(scheduler, "m", 10)
    first = scheduler.ready(0)
    assert len(first) == 2                       # initial_destination_concurrency
    assert first[0].cache_flags                  # a backlog: use/store cached connections
    assert scheduler.ready(0) == []
    for job in first:
        scheduler.finished(job, ok=True)
    second = scheduler.ready(0)
    assert len(second) == 4                      # window grew by one per success, capped at 4
    for job in second:
        scheduler.finished(job, ok=False)
    assert len(scheduler.ready(0)) == 1          # failures shrink it again (never below one)


def test_suspension_hands_back_waiting_jobs_and_blocks_new_ones():
    scheduler = make_scheduler()
    made = jobs(scheduler, "m", 3)
    started = scheduler.ready(0)
    waiting = scheduler.suspend(("smtp", "example.com"), ("4.4.1", "connect failed"), until=100)
    assert {id(j) for j in waiting} == {id(j) for j in made} - {id(j) for b in started for j in b.jobs}
    assert scheduler.blocked(made[0], now=50) == ("4.4.1", "connect failed")
    assert scheduler.blocked(made[0], now=100) is None
    other = scheduler.split("m2", "smtp", "other.example", [1])[0]
    assert scheduler.blocked(other, now=50) is None


def test_transport_throttle_affects_every_destination_of_the_transport():
    scheduler = make_scheduler(initial=1)
    a = jobs(scheduler, "m", 2, "a.example")
    b = jobs(scheduler, "m", 2, "b.example")
    scheduler.ready(0)
    waiting = scheduler.throttle_transport("smtp", ("4.3.0", "agent crashed"), until=60)
    assert len(waiting) == len(a) + len(b) - 2
    assert scheduler.ready(30) == []
    lmtp = scheduler.split("m", "lmtp", "unix:/x", [1])[0]
    assert scheduler.blocked(lmtp, 30) is None


def test_single_job_without_backlog_does_not_ask_for_caching():
    scheduler = make_scheduler()
    jobs(scheduler, "m", 1)
    (job,) = scheduler.ready(0)
    assert job.cache_flags is False


def test_revive_ends_suspensions_and_throttles():
    scheduler = make_scheduler()
    (job,) = scheduler.split("m", "smtp", "example.com", [1])
    scheduler.suspend(job.key, ("4.4.1", "down"), until=100)
    scheduler.throttle_transport("lmtp", ("4.3.0", "crashed"), until=100)
    scheduler.revive()
    assert scheduler.blocked(job, now=1) is None
    assert scheduler.blocked(scheduler.split("m", "lmtp", "x", [1])[0], now=1) is None


def test_without_a_batch_limit_every_request_carries_one_job():
    scheduler = make_scheduler(initial=2, limit=4)
    jobs(scheduler, "m", 10)
    assert [len(batch.jobs) for batch in scheduler.ready(0)] == [1, 1]


def test_a_backlog_is_shared_out_in_batches_up_to_the_limit():
    scheduler = make_scheduler(initial=2, limit=4, rcpt_limit=1, batch_limit=3)
    made = jobs(scheduler, "m", 5)              # 10 one-recipient jobs, 2 free slots
    first = scheduler.ready(0)
    assert [len(batch.jobs) for batch in first] == [3, 3]      # ceil(10/2) = 5, capped at 3
    assert [j for b in first for j in b.jobs] == made[:6]      # FIFO
    assert all(b.cache_flags for b in first)
    assert scheduler.ready(0) == []             # a batch takes one concurrency slot
    scheduler.finished(first[0], ok=True)       # the window grows once per request: 3
    second = scheduler.ready(0)
    assert [len(b.jobs) for b in second] == [2, 2]             # ceil(4/2) = 2 each
    assert second[-1].cache_flags               # another request is still busy


def test_a_small_backlog_goes_out_in_parallel_not_in_one_batch():
    scheduler = make_scheduler(initial=4, limit=4, rcpt_limit=1, batch_limit=20)
    jobs(scheduler, "m", 2)                     # 4 jobs, 4 free slots
    assert [len(b.jobs) for b in scheduler.ready(0)] == [1, 1, 1, 1]
