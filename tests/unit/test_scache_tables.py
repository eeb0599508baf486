"""The scache tables (postclient/scache/tables.py): FIFO, bindings, TTL, the descriptor limit.

Descriptors here are plain numbers: the tables close them through an
injected ``close`` and read time from an injected clock.
"""

import pytest

from postclient.scache.tables import Tables


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def closed():
    return []


@pytest.fixture
def tables(clock, closed):
    return Tables(ttl_limit=2, max_sessions=100, clock=clock, close=closed.append)


def test_find_endp_takes_the_oldest_session_and_forgets_it(tables):
    for fd in (10, 11, 12):
        tables.save_endp(2, "smtp:[192.0.2.1]:25", f"props{fd}", fd)
    assert tables.session_count == 3
    assert tables.find_endp("smtp:[192.0.2.1]:25") == (10, "props10")
    assert tables.find_endp("smtp:[192.0.2.1]:25") == (11, "props11")
    tables.save_endp(2, "smtp:[192.0.2.1]:25", "props13", 13)
    assert tables.find_endp("smtp:[192.0.2.1]:25") == (12, "props12")
    assert tables.find_endp("smtp:[192.0.2.1]:25") == (13, "props13")
    assert tables.find_endp("smtp:[192.0.2.1]:25") is None
    assert tables.session_count == tables.endpoint_count == 0


def test_labels_are_separate(tables):
    tables.save_endp(2, "a", "", 10)
    tables.save_endp(2, "b", "", 11)
    assert tables.find_endp("b") == (11, "")
    assert tables.find_endp("c") is None
    assert tables.endpoint_count == 1


def test_find_dest_returns_the_first_binding_whose_endpoint_has_a_session(tables):
    tables.save_dest(2, "smtp:example.com:25", "dest-a", "endp-a")
    tables.save_dest(2, "smtp:example.com:25", "dest-b", "endp-b")
    tables.save_endp(2, "endp-b", "props-b", 21)
    assert tables.find_dest("smtp:example.com:25") == (21, "dest-b", "props-b")
    tables.save_endp(2, "endp-a", "props-a", 20)
    tables.save_endp(2, "endp-b", "props-b2", 22)
    assert tables.find_dest("smtp:example.com:25") == (20, "dest-a", "props-a")
    assert tables.find_dest("smtp:example.com:25") == (22, "dest-b", "props-b2")
    assert tables.find_dest("smtp:example.com:25") is None
    # The bindings stay until their own TTL runs out.
    assert tables.destination_count == 1
    assert tables.find_dest("smtp:other.example:25") is None


def test_saving_the_same_binding_again_refreshes_it(tables, clock):
    tables.save_dest(2, "dest", "p", "endp")
    clock.now += 1.5
    tables.save_dest(2, "dest", "p", "endp")
    tables.save_dest(2, "dest", "other-properties", "endp")
    assert len(tables.destinations["dest"]) == 2
    clock.now += 1.0            # 2.5 s after the first save, 1 s after the refresh
    tables.expire()
    assert [b.properties for b in tables.destinations["dest"]] == ["p", "other-properties"]
    clock.now += 1.5
    tables.expire()
    assert tables.destination_count == 0


def test_ttl_is_the_smaller_of_the_request_and_the_limit(tables, clock, closed):
    tables.save_endp(100, "long", "", 10)      # capped at 2
    tables.save_endp(1, "short", "", 11)
    assert tables.next_expiry() == clock.now + 1
    clock.now += 1.0
    assert tables.expire() == 1
    assert closed == [11]
    assert tables.find_endp("short") is None
    clock.now += 0.9
    assert tables.expire() == 0
    clock.now += 0.1
    assert tables.expire() == 1
    assert closed == [11, 10]
    assert tables.session_count == tables.endpoint_count == 0
    assert tables.next_expiry() is None


def test_a_session_taken_before_expiry_is_not_closed_later(tables, clock, closed):
    tables.save_endp(2, "a", "", 10)
    assert tables.find_endp("a") == (10, "")
    clock.now += 5
    assert tables.expire() == 0
    assert closed == []


def test_expired_binding_does_not_touch_the_sessions(tables, clock, closed):
    tables.save_dest(1, "dest", "", "endp")
    tables.save_endp(2, "endp", "", 10)
    clock.now += 1.5
    tables.expire()
    assert tables.find_dest("dest") is None
    assert tables.find_endp("endp") == (10, "")
    assert closed == []


def test_the_descriptor_limit_drops_the_oldest_session_of_all(clock, closed):
    tables = Tables(ttl_limit=2, max_sessions=3, clock=clock, close=closed.append)
    assert tables.save_endp(2, "a", "", 10) == 0
    tables.save_endp(2, "b", "", 11)
    tables.save_endp(2, "a", "", 12)
    assert tables.save_endp(2, "c", "", 13) == 1
    assert closed == [10]
    assert tables.session_count == 3
    assert tables.find_endp("a") == (12, "")
    assert tables.find_endp("b") == (11, "")
    clock.now += 10
    tables.expire()
    assert closed == [10, 13]


def test_close_all_closes_every_cached_descriptor(tables, closed):
    for fd in (10, 11, 12):
        tables.save_endp(2, f"e{fd}", "", fd)
    tables.save_dest(2, "d", "", "e10")
    tables.find_endp("e11")
    tables.close_all()
    assert sorted(closed) == [10, 12]
    assert tables.session_count == tables.endpoint_count == tables.destination_count == 0


def test_sizes_for_the_statistics(tables):
    tables.save_dest(2, "d1", "", "e1")
    tables.save_dest(2, "d2", "", "e1")
    tables.save_endp(2, "e1", "", 10)
    tables.save_endp(2, "e1", "", 11)
    tables.save_endp(2, "e2", "", 12)
    assert (tables.destination_count, tables.endpoint_count, tables.session_count) == (2, 2, 3)
