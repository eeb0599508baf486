"""Where a recipient goes: (transport, next-hop), as Postfix's trivial-rewrite decides.

Exports Router and Route.  Reads transport_maps, relay_domains,
relay_transport, default_transport, relayhost, recipient_delimiter.

Order (postfix transport(5) and ADDRESS_CLASS_README, for a relay that
delivers nothing locally):
  1. transport_maps: the full address, the address without its extension,
     the domain, each parent domain as ``.parent``, then ``*``.  A result is
     ``transport:nexthop``; an empty transport or next-hop keeps the default.
  2. A domain in relay_domains (or a subdomain of one given as ``.domain``)
     uses relay_transport; every other domain default_transport.
  3. The next-hop is the one in the transport (``smtp:[relay]:587``), else
     relayhost, else the recipient's domain.
"""

import dataclasses

from .. import maps


@dataclasses.dataclass(frozen=True)
class Route:
    transport: str
    nexthop: str


def split_transport(value):
    """``transport:nexthop`` -> (transport, nexthop); a bare word is a transport."""
    transport, _, nexthop = value.partition(":")
    return transport.strip(), nexthop.strip()


class Router:
    def __init__(self, config):
        self.transport_maps = maps.open_tables(config.expand("transport_maps"))
        self.relay_domains = [d.lower() for d in config.get("relay_domains")]
        self.relay_transport = split_transport(config.get("relay_transport"))
        self.default_transport = split_transport(config.get("default_transport"))
        self.relayhost = config.get("relayhost")
        self.delimiter = config.get("recipient_delimiter")

    def _transport_keys(self, address):
        local, at, domain = address.rpartition("@")
        domain = domain.lower()
        keys = [address]
        if at and self.delimiter and self.delimiter in local:
            keys.append(local.split(self.delimiter, 1)[0] + "@" + domain)
        if at:
            keys.append(domain)
            labels = domain.split(".")
            keys += ["." + ".".join(labels[i:]) for i in range(1, len(labels))]
        keys.append("*")
        return keys, domain

    def _in_relay_domains(self, domain):
        for entry in self.relay_domains:
            if domain == entry or (entry.startswith(".") and domain.endswith(entry)):
                return True
        return False

    def route(self, address):
        """The Route for ``address``; a transport_maps error raises maps.TableError."""
        keys, domain = self._transport_keys(address)
        found = None
        if self.transport_maps.tables:
            for key in keys:
                found = self.transport_maps.lookup(key)
                if found is not None:
                    break
        default = self.relay_transport if self._in_relay_domains(domain) else self.default_transport
        transport, nexthop = default
        if found is not None:
            mapped_transport, mapped_nexthop = split_transport(found)
            transport = mapped_transport or transport
            nexthop = mapped_nexthop or nexthop
        return Route(transport, nexthop or self.relayhost or domain)
