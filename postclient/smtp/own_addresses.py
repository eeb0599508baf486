"""This mail system's own addresses, for mail loop detection.

Exports LocalAddresses (the addresses that mean "this machine": ``address in
local``) and interface_addresses() (every address on this machine's
interfaces).  For resolve.py: _local_addresses(settings), one LocalAddresses
per process for each (inet_interfaces, proxy_interfaces) pair.

Reads inet_interfaces and proxy_interfaces, from the caller
(LocalAddresses.from_settings(), or the ResolverSettings given to
_local_addresses()).

As Postfix's own_inet_addr.c: an address is ours when it is one of
inet_interfaces or proxy_interfaces (the addresses of a proxy or NAT in front
of us).  ``inet_interfaces = all`` means every address of this machine: the
IPv4 addresses from the SIOCGIFCONF ioctl, the IPv6 ones from
/proc/net/if_inet6 (falling back to getaddrinfo(gethostname()) where those
are unavailable), plus all of 127.0.0.0/8 and ::1.  An explicit list means
exactly those addresses (names are resolved with getaddrinfo, and one that
does not resolve is a ValueError naming the parameter; ``loopback-only`` is
127.0.0.1 and ::1): tests set ``inet_interfaces = 127.0.0.1`` so that their
MX hosts 127.0.0.2, 127.0.0.3 ... are not "this machine".  Addresses are
compared without a %scope, and IPv4-mapped IPv6 addresses as IPv4.
"""

import array
import fcntl
import ipaddress
import socket
import struct

from .destination import valid_hostaddr

__all__ = ["LocalAddresses", "interface_addresses"]


def _ipv4_interface_addresses():
    """IPv4 addresses of every interface (SIOCGIFCONF; aliases included)."""
    siocgifconf = 0x8912
    ifreq_size = 40 if struct.calcsize("P") == 8 else 32
    buffer = array.array("B", bytes(ifreq_size * 256))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("iL", len(buffer), buffer.buffer_info()[0])
        length = struct.unpack("iL", fcntl.ioctl(probe.fileno(), siocgifconf, request))[0]
    data = buffer.tobytes()[:length]
    return [socket.inet_ntoa(data[offset + 20:offset + 24])
            for offset in range(0, length, ifreq_size)]


def _ipv6_interface_addresses():
    found = []
    with open("/proc/net/if_inet6", encoding="ascii") as table:
        for line in table:
            hexadecimal = line.split()[0]
            found.append(str(ipaddress.IPv6Address(bytes.fromhex(hexadecimal))))
    return found


def interface_addresses():
    """Every address configured on this machine's interfaces (see the module docstring)."""
    found = []
    for source in (_ipv4_interface_addresses, _ipv6_interface_addresses):
        try:
            found.extend(source())
        except (OSError, ValueError, struct.error):
            pass
    if not found:
        try:
            found = [info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)]
        except OSError:
            pass
    return found


class LocalAddresses:
    """The addresses that mean "this machine" for mail loop detection."""

    def __init__(self, addresses=(), networks=()):
        self.addresses = {_normal(address) for address in addresses}
        self.networks = [ipaddress.ip_network(network) for network in networks]

    def __contains__(self, address):
        try:
            ip = _normal(address)
        except ValueError:
            return False
        return ip in self.addresses or any(ip in network for network in self.networks
                                           if network.version == ip.version)

    @classmethod
    def from_settings(cls, inet_interfaces, proxy_interfaces=()):
        """ValueError naming the parameter when a name does not resolve."""
        addresses, networks = [], []
        for parameter, items in (("inet_interfaces", inet_interfaces),
                                 ("proxy_interfaces", proxy_interfaces)):
            for item in items:
                word = item.strip()
                if word.startswith("[") and word.endswith("]"):
                    word = word[1:-1]
                if not word:
                    continue
                if word.lower() == "all" and parameter == "inet_interfaces":
                    addresses.extend(interface_addresses())
                    networks.extend(["127.0.0.0/8", "::1/128"])
                elif word.lower() == "loopback-only" and parameter == "inet_interfaces":
                    addresses.extend(["127.0.0.1", "::1"])
                elif valid_hostaddr(word):
                    addresses.append(word)
                else:
                    try:
                        infos = socket.getaddrinfo(word, None, 0, socket.SOCK_STREAM)
                    except (OSError, UnicodeError) as error:
                        raise ValueError(f"{parameter}: host not found: {word} ({error})") from None
                    addresses.extend(info[4][0] for info in infos)
        return cls(addresses, networks)


def _normal(address):
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


_local_cache = {}


def _local_addresses(settings):
    key = (tuple(settings.inet_interfaces), tuple(settings.proxy_interfaces))
    if key not in _local_cache:
        _local_cache[key] = LocalAddresses.from_settings(*key)
    return _local_cache[key]
