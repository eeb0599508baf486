"""Postfix's lookup order for an email address, in one place.

Exports:
    lookup_address(tables, address, *, local_domains=(), recipient_delimiter="")
    strip_extension(localpart, delimiters) -> localpart without extension, or None

For ``user+ext@domain`` (Postfix mail_addr_find(), default strategy), each
step searching the whole TableList in order and stopping at the first match:

1. ``user+ext@domain``   every table, regexp/pcre/cidr included
2. ``user@domain``       exact-match tables only; only with a
                         ``recipient_delimiter`` and an extension present
3. ``user+ext``, then ``user``
                         exact-match tables only; only when the domain is
                         local (``local_domains``: Postfix's $myorigin,
                         $mydestination, interface addresses)
4. ``@domain``           exact-match tables only

Pattern tables see only the full address, never a partial key, so that a
pattern like ``/^user@/`` cannot match a bare ``user`` by accident.

Case: the domain is lower-cased before any lookup; exact-match tables fold
the whole key themselves (so ``User@Example.COM`` finds ``user@example.com``
in a hash table), pattern tables see the localpart as written.

Extensions: the localpart is split at the first character that is in
``recipient_delimiter`` (each of its characters is a delimiter, as in
Postfix 2.11+), never when the extension would leave an empty localpart.
As in Postfix's split_addr(), ``postmaster``, ``mailer-daemon`` and
``double-bounce`` are never split, and with ``-`` among the delimiters
neither are ``owner-*`` and ``*-request`` (owner_request_special = yes).

The null address (``""`` or ``"<>"``) is never looked up and gives None:
Postfix's maps_find() refuses empty keys, and a bare ``<>`` key would match
nothing meaningful in an address table.  A caller that has a table keyed on
the null sender (Postfix's ``<>`` convention) looks that key up itself with
``TableList.lookup("<>")``.

The address is queried as given: quoting of the localpart (external form)
is the caller's business, as is which form its tables use.

Reads no configuration parameters: callers pass ``local_domains`` (an
iterable of domain names, a list value such as "example.com, localhost", or
a callable ``domain -> bool``) and ``recipient_delimiter``.
"""

from .syntax import split_list

_NEVER_SPLIT = ("postmaster", "mailer-daemon", "double-bounce")


def strip_extension(localpart, delimiters):
    """``user+ext`` -> ``user``; None when there is no extension to strip."""
    if not delimiters:
        return None
    lowered = localpart.lower()
    if lowered in _NEVER_SPLIT:
        return None
    if "-" in delimiters and (lowered.startswith("owner-") or
                              (len(lowered) > 8 and lowered.endswith("-request"))):
        return None
    for index, char in enumerate(localpart):
        if char in delimiters:
            return localpart[:index] if index else None
    return None


def _is_local(domain, local_domains):
    if callable(local_domains):
        return bool(local_domains(domain))
    if isinstance(local_domains, str):
        local_domains = split_list(local_domains)
    return any(domain == name.lower() for name in local_domains)


def lookup_address(tables, address, *, local_domains=(), recipient_delimiter=""):
    """Look ``address`` up in ``tables`` (a TableList) in Postfix's order."""
    if not address or address == "<>":
        return None
    at = address.rfind("@")
    if at >= 0:
        localpart, domain = address[:at], address[at + 1:].lower()
        full = localpart + "@" + domain
    else:
        localpart, domain, full = address, None, address

    result = tables.lookup(full)
    if result is not None:
        return result

    bare = strip_extension(localpart, recipient_delimiter)
    if bare is not None:
        result = tables.lookup(bare if domain is None else bare + "@" + domain,
                               fixed_only=True)
        if result is not None:
            return result

    if domain is None:
        return None

    if _is_local(domain, local_domains):
        result = tables.lookup(localpart, fixed_only=True)
        if result is None and bare is not None:
            result = tables.lookup(bare, fixed_only=True)
        if result is not None:
            return result

    return tables.lookup("@" + domain, fixed_only=True)
