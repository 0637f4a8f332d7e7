"""Where a webhook may go: an http(s) URL without a user name or password, to public addresses
only, unless the operator allows a host or a network for an internal receiver
(``DISTILL_WEBHOOK_ALLOWED_HOSTS``).

The address rule is enforced when a connection is made (``GuardedBackend``): the host is resolved
here, every address it resolves to is checked, and the connection goes to a checked address, so a
name that resolves elsewhere between the check and the connect (DNS rebinding) gains nothing, and
odd spellings of an address (``127.1``, ``2130706433``, ``0x7f000001``) are judged by what they
resolve to. ``check_url`` also runs on submit, for a clear error early; it does not resolve names.
"""

import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any

import httpcore
import httpx

from app.config import get_settings

IPAddress = IPv4Address | IPv6Address
Resolver = Callable[[str, int], list[IPAddress]]

CGNAT = ip_network("100.64.0.0/10")  # shared address space: a carrier's or a cloud's inside
NAT64 = ip_network("64:ff9b::/96")  # an IPv4 address behind a NAT64 gateway


class TargetRefused(ValueError):
    """The URL, or an address its host resolves to, is not allowed. A ValueError, so that the job
    spec's validator reports it as an invalid ``webhook_url``."""


@dataclass(frozen=True)
class AllowList:
    """The operator's exceptions: host names (exact) and networks that may be private."""

    hosts: frozenset[str]
    networks: tuple[IPv4Network | IPv6Network, ...]

    def allows_host(self, host: str) -> bool:
        return _normal(host) in self.hosts

    def allows_address(self, ip: IPAddress) -> bool:
        candidates = [ip] + ([v4] if (v4 := embedded_ipv4(ip)) else [])
        return any(a in n for a in candidates for n in self.networks if a.version == n.version)


def parse_allow_list(entries: Iterable[str]) -> AllowList:
    """Each entry an address or a CIDR network (``10.1.2.3``, ``10.0.0.0/8``, ``fd00::/8``) or a
    host name (``hooks.internal``)."""
    hosts, networks = set(), []
    for entry in entries:
        try:
            networks.append(ip_network(entry, strict=False))
        except ValueError:
            hosts.add(_normal(entry))
    return AllowList(frozenset(hosts), tuple(networks))


def allow_list() -> AllowList:
    return _parsed(tuple(get_settings().webhook_allowed_hosts))


@lru_cache(maxsize=4)
def _parsed(entries: tuple[str, ...]) -> AllowList:
    return parse_allow_list(entries)


def _normal(host: str) -> str:
    return host.strip().rstrip(".").lower()


def embedded_ipv4(ip: IPAddress) -> IPv4Address | None:
    """The IPv4 address an IPv6 one stands for: IPv4-mapped (``::ffff:a.b.c.d``), IPv4-compatible
    (``::a.b.c.d``, ``::1`` included), 6to4 or NAT64; None for a plain one."""
    if isinstance(ip, IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in NAT64 or int(ip) < 2**32:
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(ip: IPAddress) -> bool:
    """False for loopback, private (RFC 1918, fc00::/7), link-local (169.254/16, where clouds keep
    their metadata service; fe80::/10), unspecified, multicast, reserved and shared (100.64/10)
    addresses, and for IPv6 forms of such IPv4 ones."""
    ip = embedded_ipv4(ip) or ip
    special = (
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_unspecified
        or ip.is_multicast or ip.is_reserved or ip in CGNAT
        or (isinstance(ip, IPv6Address) and ip.is_site_local)
    )  # fmt: skip
    return ip.is_global and not special


def check_url(url: str) -> None:
    """Refuse a URL whatever it resolves to: not http(s), a user name or password in it, or a host
    that is ``localhost`` or an address that is not public (and not allowed)."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise TargetRefused(f"not a valid URL ({exc})") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise TargetRefused("the URL must be http:// or https:// with a host")
    if parsed.userinfo:
        raise TargetRefused("the URL must not carry a user name or password")
    host, allowed = _normal(parsed.host), allow_list()
    if allowed.allows_host(host):
        return
    if host == "localhost" or host.endswith(".localhost"):
        raise TargetRefused("localhost is not allowed")
    try:
        ip = ip_address(host)
    except ValueError:
        return  # a name: judged by its addresses when a delivery connects
    if not is_public(ip) and not allowed.allows_address(ip):
        raise TargetRefused(f"{ip} is not a public address")


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to, in the resolver's order (numeric spellings too)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ip_address(info[4][0]) for info in infos))


class GuardedBackend(httpcore.SyncBackend):
    """httpcore's socket backend, connecting only to addresses the rule allows."""

    def __init__(self, resolver: Resolver = resolve):
        self.resolver = resolver

    def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:  # fmt: skip
        failure: Exception | None = None
        for ip in self.addresses(host, port):
            try:  # the checked address itself: TLS's server name and Host stay the host's name
                return super().connect_tcp(str(ip), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc  # as socket.create_connection does: the next address
        assert failure is not None
        raise failure

    def addresses(self, host: str, port: int) -> list[IPAddress]:
        try:
            addresses = self.resolver(host, port)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        if not addresses:
            raise httpcore.ConnectError(f"{host} has no address")
        allowed = allow_list()
        if allowed.allows_host(host):
            return addresses
        for ip in addresses:
            if not is_public(ip) and not allowed.allows_address(ip):
                raise TargetRefused(f"{host} resolves to {ip}, which is not a public address")
        return addresses

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        raise TargetRefused("webhooks are not sent over Unix sockets")


class GuardedTransport(httpx.HTTPTransport):
    """httpx's own transport, on a connection pool whose connections go through the guard. httpx
    takes no network backend, so the pool it builds is replaced by the same pool with one."""

    def __init__(self, resolver: Resolver = resolve):
        super().__init__()
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_keepalive_connections=20,  # httpx's defaults; the delivery pool bounds the rest
            keepalive_expiry=5.0,
            network_backend=GuardedBackend(resolver),
        )


def client(timeout: float, resolver: Resolver = resolve) -> httpx.Client:
    """The client deliveries go through: guarded, no redirects (the signed URL is the one the team
    gave), and no proxy from the environment (a transport of its own rules that out)."""
    return httpx.Client(
        transport=GuardedTransport(resolver), timeout=timeout, follow_redirects=False
    )
