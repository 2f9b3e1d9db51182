"""Which address a node listens on and which one it gives the rest of the cluster.

Every process of a node is reached by the address it *advertises*, so that address must be
one the head and the other nodes can reach. ``127.0.0.1`` only works on one machine, and the
address a host name resolves to is often a loopback alias too (``127.0.1.1`` on Debian), so
neither is a safe default once a cluster spans machines. The rules, in order:

* ``--node-ip`` / ``--interface`` (or ``NBCLUSTER_NODE_IP``) name the address outright;
* ``--host`` names the address to listen on; a wildcard (``0.0.0.0``) listens everywhere and
  advertises the interface that routes to the head (on the head: to the default route);
* with neither, a node joining a head listens on, and advertises, the interface that routes to
  the head (loopback when the head is local); a head listens on loopback.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

WILDCARDS = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class NodeAddress:
    """Where a node's processes listen (``bind``) and how others reach them (``advertise``)."""

    bind: str
    advertise: str

    @property
    def local(self) -> str:
        """The host this machine's own processes dial: the advertised one unless it is a
        wildcard listener (which also answers on loopback)."""
        return "127.0.0.1" if self.bind in WILDCARDS else self.advertise


#: On a machine other than the head's: the head machine's reachable address. Processes on
#: the head's machine may advertise loopback addresses (a notebook's cluster starts on
#: loopback and opens to the network only when a remote node is added); from here, those
#: addresses mean the head's machine. See ``exposure``.
_loopback_alias: str | None = None


def set_loopback_alias(host: str | None) -> None:
    global _loopback_alias
    _loopback_alias = host if host and not is_loopback(host) else None


def loopback_alias() -> str | None:
    return _loopback_alias


def dial_host(host: str) -> str:
    """The host to connect to for an advertised ``host`` (see ``set_loopback_alias``)."""
    if _loopback_alias is not None and is_loopback(host):
        return _loopback_alias
    return host


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def resolve(host: str) -> str:
    """``host`` as an IPv4 address (names resolved once, here, with a clear error)."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    try:
        return socket.gethostbyname(host)
    except OSError as e:
        raise ValueError(f"cannot resolve host name {host!r}: {e}") from None


def route_to(host: str, port: int = 9) -> str:
    """The local IPv4 address of the interface the kernel would use to reach ``host``.

    A UDP ``connect`` sends nothing: it only asks the routing table, so this is instant and
    works without the target answering.
    """
    target = resolve(host)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((target, port))
        except OSError as e:
            raise ValueError(f"no route from this machine to {host} ({target}): {e}") from None
        return str(s.getsockname()[0])


def interface_ip(name: str) -> str:
    """The IPv4 address of the network interface ``name`` (``eth0``, ``ib0``...)."""
    import psutil

    addrs = psutil.net_if_addrs()
    for a in addrs.get(name, ()):
        if a.family == socket.AF_INET:
            return str(a.address)
    known = ", ".join(
        f"{n} ({a.address})"
        for n, items in sorted(addrs.items())
        for a in items
        if a.family == socket.AF_INET
    )
    raise ValueError(
        f"no network interface {name!r} with an IPv4 address; this machine has: {known}"
    )


def primary_ip() -> str:
    """The address of the interface holding the default route, else the first interface
    that is up and not loopback, else loopback (a machine with no network)."""
    try:
        return route_to("192.0.2.1")  # TEST-NET-1: never a real host, any default route fits
    except ValueError:
        pass
    import psutil

    stats = psutil.net_if_stats()
    for name, items in sorted(psutil.net_if_addrs().items()):
        if name in stats and not stats[name].isup:
            continue
        for a in items:
            if a.family == socket.AF_INET and not is_loopback(a.address):
                return str(a.address)
    return "127.0.0.1"


def local_ips() -> set[str]:
    """Every address of this machine's interfaces."""
    import psutil

    return {a.address for items in psutil.net_if_addrs().values() for a in items}


def choose(
    host: str | None = None,
    node_ip: str | None = None,
    interface: str | None = None,
    head_address: str | None = None,
) -> NodeAddress:
    """Apply the rules of this module's docstring."""
    if node_ip and interface:
        raise ValueError("give --node-ip or --interface, not both")
    if interface:
        node_ip = interface_ip(interface)
    if node_ip:
        node_ip = resolve(node_ip)
        if node_ip not in local_ips():
            raise ValueError(
                f"--node-ip {node_ip} is not an address of this machine "
                f"(it has {', '.join(sorted(local_ips()))})"
            )
        return NodeAddress(host if host is not None else node_ip, node_ip)
    if host is not None and host not in WILDCARDS:
        return NodeAddress(host, host)
    if head_address:
        head_host = head_address.rpartition(":")[0].strip("[]")
        reach = route_to(head_host)
    else:
        reach = primary_ip() if host is not None else "127.0.0.1"
    return NodeAddress(host if host is not None else reach, reach)
