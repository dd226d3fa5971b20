"""Where a webhook may send: an http(s) URL whose host resolves only to public addresses.

The server makes these requests on a tenant's behalf, so a URL naming this machine, its cloud's
metadata service or the private network behind it is refused (SSRF) unless the operator allows
private addresses. Checked when a webhook is registered and again at each delivery, which then
connects to the very address it checked (a name that resolves elsewhere a second time, DNS
rebinding, changes nothing).
"""

from __future__ import annotations

import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORTS = {"http": 80, "https": 443}
# Name lookups run here, so that one that hangs is abandoned after its timeout.
_resolvers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook-dns")


class AddressRefused(ValueError):
    """The URL may not be sent to; the message says why, naming the URL's host."""


@dataclass(frozen=True)
class Target:
    """A checked URL and the address to connect to for it."""

    url: str
    scheme: str
    host: str
    port: int
    address: IPAddress

    @property
    def pinned_url(self) -> str:
        """The URL with its host replaced by the checked address."""
        parts = urlsplit(self.url)
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return SplitResult(
            self.scheme, f"{host}:{self.port}", parts.path or "/", parts.query, ""
        ).geturl()

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


def parse(url: str) -> SplitResult:
    """The URL's parts, if it is an absolute http(s) URL with a host and no credentials."""
    if any(char.isspace() or ord(char) < 32 for char in url):
        raise AddressRefused("the URL may not contain spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme.lower() not in DEFAULT_PORTS:
        raise AddressRefused("the URL must start with http:// or https://")
    if not parts.hostname:
        raise AddressRefused("the URL names no host")
    if parts.username is not None or parts.password is not None:
        raise AddressRefused(
            "the URL may not carry credentials: the signature header proves the sender"
        )
    try:
        parts.port  # noqa: B018  # raises for a port out of range
    except ValueError:
        raise AddressRefused("the URL's port is not a number from 1 to 65535") from None
    return parts


def why_not_public(address: IPAddress) -> str | None:
    """Why a webhook may not reach this address without the operator's leave, or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_unspecified or address.is_multicast:
        return "not a unicast address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "not a public address"
    return None


def resolve(url: str, *, allow_private: bool, timeout_seconds: float) -> Target:
    """The checked target of `url`; AddressRefused if it may not be sent to."""
    parts = parse(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    port = parts.port or DEFAULT_PORTS[scheme]
    addresses = _addresses(host, port, timeout_seconds)
    if not allow_private:
        for address in addresses:
            reason = why_not_public(address)
            if reason is not None:
                named = host if host == str(address) else f"{host} ({address})"
                raise AddressRefused(
                    f"the URL's host {named} is {reason}; webhooks go to public addresses "
                    "only (the operator's CLIPFT_WEBHOOK_ALLOW_PRIVATE allows others)"
                )
    return Target(url=url, scheme=scheme, host=host, port=port, address=addresses[0])


def _addresses(host: str, port: int, timeout_seconds: float) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    lookup = _resolvers.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = lookup.result(timeout=timeout_seconds)
    except FutureTimeout:
        raise AddressRefused(f"the URL's host {host} did not resolve in time") from None
    except (OSError, UnicodeError):
        raise AddressRefused(f"the URL's host {host} does not resolve") from None
    addresses = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise AddressRefused(f"the URL's host {host} does not resolve")
    return addresses
