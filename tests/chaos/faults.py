"""Fault actions on a namespace LAN: signals by PID and nftables rules in the bridge
namespace: random loss both ways or one way, a split into two groups (links go down and
up with ``Host.cut`` and ``Host.restore``).

The rules live in one table, ``bridge chaos``, hooked on the bridge's forward path: they
see every frame one host sends another (unicast and the mDNS multicast alike) and
nothing else. :func:`clear_rules` deletes the table.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
from collections.abc import Iterable

from tests.lan import Host, Lan, ip

TABLE = "chaos"


@functools.cache
def nft_binary() -> str | None:
    """Path of ``nft`` (Debian package nftables), or None."""
    for candidate in (shutil.which("nft"), "/usr/sbin/nft", "/sbin/nft"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def nft_unavailable() -> str | None:
    """Why nftables rules cannot be used here, or None."""
    if nft_binary() is None:
        return "nft (Debian package nftables) is not installed: apt-get install -y nftables"
    return None


def nft(lan: Lan, script: str) -> None:
    """Run an nft script in the bridge namespace; RuntimeError with its stderr on failure."""
    binary = nft_binary()
    if binary is None:
        raise RuntimeError(nft_unavailable())
    try:
        ip("netns", "exec", lan.bridge_netns, binary, "-f", "-", input=script, timeout=10)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\n{script}") from None


def _ports(hosts: Iterable[Host]) -> str:
    return "{ " + ", ".join(f'"{h.bridge_port}"' for h in hosts) + " }"


def set_rules(lan: Lan, rules: Iterable[str]) -> None:
    """Replace the chaos table's rules with ``rules`` (nft rule statements)."""
    body = "\n".join(f"        {rule}" for rule in rules)
    clear_rules(lan)
    nft(
        lan,
        f"table bridge {TABLE} {{\n    chain forward {{\n"
        f"        type filter hook forward priority 0; policy accept;\n{body}\n    }}\n}}\n",
    )


def clear_rules(lan: Lan) -> None:
    """Delete the chaos table (no rule left); nothing to do when there is none."""
    with contextlib.suppress(RuntimeError):
        nft(lan, f"delete table bridge {TABLE}\n")


def loss_rule(percent: int, source: Host | None = None) -> str:
    """Drop ``percent``% of frames at random: all of them, or those ``source`` sends."""
    match = f'iifname "{source.bridge_port}" ' if source is not None else ""
    return f"{match}numgen random mod 100 < {percent} drop"


def split_rules(side_a: Iterable[Host], side_b: Iterable[Host]) -> list[str]:
    """Drop everything between the two sides, both ways (a partition of the LAN)."""
    a, b = _ports(side_a), _ports(side_b)
    return [f"iifname {a} oifname {b} drop", f"iifname {b} oifname {a} drop"]


def send_signal(pid: int, sig: signal.Signals) -> bool:
    """Signal ``pid``; False when it is gone already."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True
