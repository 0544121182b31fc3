"""This machine's network interfaces: the IPv4 addresses a name (or an address) stands for.

A node binds the first address of its first interface when no host is given, and
zeroconf runs on the addresses of all of them (docs/configuration.md, "host").
Reading the interfaces (``getifaddrs`` through ifaddr) is the only I/O here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import ifaddr

from .._errors import ConfigError

__all__ = ["ipv4_addresses"]


def ipv4_addresses(items: Sequence[str], label: str = "interfaces") -> list[str]:
    """IPv4 addresses for ``items`` (interface names, or IPv4 addresses taken as they
    are), in order, without repeats; a name's addresses in the order the system lists
    them. :class:`ConfigError` starting with ``label`` for an IPv6 address, a name no
    interface has (listing those that exist) or an interface without IPv4."""
    adapters: list[ifaddr.Adapter] | None = None
    found: list[str] = []
    for item in items:
        try:
            address = ipaddress.ip_address(item)
        except ValueError:
            pass
        else:
            if address.version != 4:
                raise ConfigError(f"{label}: {item!r} is IPv6; discovery runs on IPv4 only")
            found.append(str(address))
            continue
        if adapters is None:
            adapters = list(ifaddr.get_adapters())
        ips = [
            ip.ip
            for adapter in adapters
            if item in (adapter.name, adapter.nice_name)
            for ip in adapter.ips
            if isinstance(ip.ip, str)
        ]
        if not ips:
            known = sorted({a.name for a in adapters})
            if any(item in (a.name, a.nice_name) for a in adapters):
                raise ConfigError(f"{label}: {item!r} has no IPv4 address")
            raise ConfigError(
                f"{label}: no network interface named {item!r} "
                f"(this machine has: {', '.join(known) or 'none'})"
            )
        found.extend(ips)
    return list(dict.fromkeys(found))
