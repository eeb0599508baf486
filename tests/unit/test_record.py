"""Record: the plain data classes that replaced dataclasses where the queue tools look."""

import pytest

from postclient.config.registry import REGISTRY
from postclient.queue.queuefile import QueuedRecipient
from postclient.queue.statuslog import StatusRecord
from postclient.record import Record


class Point(Record):
    __slots__ = ("x", "y", "label")

    def __init__(self, x, y, label=""):
        self.x = x
        self.y = y
        self.label = label


def test_fields_in_order_and_equality_by_value():
    point = Point(1, 2, "a")
    assert point.as_dict() == {"x": 1, "y": 2, "label": "a"}
    assert list(point.as_dict()) == ["x", "y", "label"]
    assert point == Point(1, 2, "a")
    assert point != Point(1, 2, "b")
    assert repr(point) == "Point(x=1, y=2, label='a')"


def test_a_record_never_equals_another_type_with_the_same_values():
    class Other(Record):
        __slots__ = ("x", "y", "label")

        def __init__(self, x, y, label=""):
            self.x, self.y, self.label = x, y, label

    assert Point(1, 2) != Other(1, 2)
    assert Point(1, 2) != (1, 2, "")


def test_replace_copies_and_leaves_the_original_alone():
    point = Point(1, 2, "a")
    moved = point.replace(y=5)
    assert moved == Point(1, 5, "a") and point == Point(1, 2, "a")
    assert type(moved) is Point
    with pytest.raises(TypeError, match="no field z"):
        point.replace(z=1)


def test_records_are_not_hashable_and_take_no_stray_attributes():
    """Equal by value and mutable, like a dataclass with eq=True: no hash; and
    __slots__ turns a misspelt field into an error instead of a silent new one."""
    with pytest.raises(TypeError):
        hash(Point(1, 2))
    with pytest.raises(AttributeError):
        Point(1, 2).z = 3


def test_the_converted_classes_keep_their_defaults():
    assert QueuedRecipient("a@example.org") == QueuedRecipient("a@example.org", "", "", "", -1, False)
    record = StatusRecord("b@example.org")
    assert record.as_dict() == {"recipient": "b@example.org", "original": "", "orcpt": "", "notify": "",
                                "offset": -1, "status": "", "dsn": "", "relay": "none", "reply": "",
                                "text": "", "time": 0.0}
    mirror = REGISTRY["lmtp_connect_timeout"]
    assert mirror.mirror_of == "smtp_connect_timeout" and mirror.type is REGISTRY["smtp_connect_timeout"].type
