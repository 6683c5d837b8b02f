"""Lookups per client address: a token bucket per address, kept in memory
for a bounded number of addresses. Time is an argument (seconds on any
monotonic clock), so tests drive it without sleeping.

Behind a reverse proxy every request comes from the proxy's address, so
every visitor would share one bucket. `client_address` takes the visitor's
address from `X-Forwarded-For` only when the connection comes from a proxy
the operator named (`markex web --trusted-proxy CIDR`), and then only the
hops those proxies added: the right-most address that is not one of them.
Anything a visitor writes in the header itself sits to the left of that and
is never read, so a visitor cannot choose another bucket."""

from __future__ import annotations

import ipaddress
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class RateLimit:
    """`per_minute` lookups a minute from one address, up to `burst` at once.
    `per_minute` 0 turns the limit off."""

    per_minute: float = 120.0
    burst: int = 30

    def __post_init__(self) -> None:
        if not math.isfinite(self.per_minute) or self.per_minute < 0 or self.burst < 1:
            raise ValueError("a rate limit needs per_minute >= 0 and burst >= 1")


class AddressLimiter:
    """Thread-safe; forgets the least recently seen address beyond `max_addresses`
    (a forgotten address starts again with a full bucket)."""

    def __init__(self, limit: RateLimit, max_addresses: int = 100_000) -> None:
        self.limit = limit
        self._max = max_addresses
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, address: str, now_s: float, cost: float = 1.0) -> float | None:
        """Take `cost` tokens (at most the burst) for `address` at `now_s`:
        None when allowed, else the seconds to wait (for Retry-After)."""
        rate = self.limit.per_minute / 60.0
        if rate == 0:
            return None
        burst = float(self.limit.burst)
        with self._lock:
            tokens, last = self._buckets.pop(address, (burst, now_s))
            tokens = min(burst, tokens + max(0.0, now_s - last) * rate)
            wait = None
            if tokens >= cost:
                tokens -= cost
            else:
                wait = (cost - tokens) / rate
            self._buckets[address] = (tokens, now_s)
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        return wait


def parse_proxies(values: Sequence[str]) -> tuple[Network, ...]:
    """`--trusted-proxy` values (an address or a CIDR block each); ValueError
    with the value that is neither."""
    out = []
    for v in values:
        try:
            out.append(ipaddress.ip_network(v.strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"--trusted-proxy {v!r} is not an IP address or a network such as 10.0.0.0/8"
            ) from None
    return tuple(out)


def _trusted(address: str, proxies: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in proxies)


def client_address(remote: str | None, forwarded_for: str | None,
                   proxies: Sequence[Network]) -> str:
    """The address a request's limit is counted against: the connection's,
    unless it comes from a trusted proxy; then the right-most hop of
    `X-Forwarded-For` that is not a trusted proxy. A hop that is not an IP
    address ends the walk at the proxy that added it (its own address
    counts), since nothing left of it was written by a trusted proxy."""
    client = remote or "?"
    if not proxies or not forwarded_for or not _trusted(client, proxies):
        return client
    for hop in reversed(forwarded_for.split(",")):
        hop = hop.strip()
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return client
        client = hop
        if not _trusted(hop, proxies):
            return hop
    return client
