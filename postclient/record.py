"""Record: the base of the plain data classes that the queue tools load.

Exports Record.

Why not dataclasses: importing the dataclasses module (and inspect, which
it needs) and generating each class's methods took about a fifth of the
start-up of ``postclient queue -f`` and ``postclient super``, which an
operator (or a script, or the drain benchmark) waits for.  So the classes
that those commands load - the configuration's Parameter and Setting, the
queue file's QueueFile and QueuedRecipient, the status logs' StatusRecord -
derive from Record instead.  A subclass lists its fields in ``__slots__``
(in order) and writes its own ``__init__``; Record gives it what a
dataclass would: a readable repr, equality by value (and so no hash),
``as_dict()`` and ``replace(**changes)``.  Nothing is frozen: the classes
that were frozen dataclasses are simply not changed after they are built.
"""


class Record:
    __slots__ = ()

    def as_dict(self):
        """{field: value}, in field order (dataclasses.asdict(), without deep copies)."""
        return {name: getattr(self, name) for name in self.__slots__}

    def replace(self, **changes):
        """A copy with ``changes`` applied (dataclasses.replace())."""
        unknown = set(changes) - set(self.__slots__)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field {', '.join(sorted(unknown))}")
        copy = object.__new__(type(self))
        for name in self.__slots__:
            object.__setattr__(copy, name, changes[name] if name in changes else getattr(self, name))
        return copy

    def _values(self):
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    __hash__ = None

    def __repr__(self):
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"
