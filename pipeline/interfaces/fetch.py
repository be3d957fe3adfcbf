"""Fetching an image by URL for the REST endpoint, without becoming a proxy into the server's network.

Off unless BACKDROP_ALLOW_URLS=1. Every address a host resolves to must be public (no loopback, private,
link-local, multicast or reserved range) unless BACKDROP_URL_ALLOW_NETWORKS lists it; the connection goes
to the checked address itself (so a second DNS answer cannot swap it), redirects are followed by hand and
checked the same way, and size and time are capped.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from urllib.parse import urljoin, urlsplit

import urllib3

from pipeline.contract.errors import BackdropError
from pipeline.contract.settings import setting

MAX_BYTES = 20 * 1024 * 1024
MAX_REDIRECTS = 3
CONNECT_TIMEOUT = 5.0
TOTAL_TIMEOUT = 30.0

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def urls_allowed() -> bool:
    return setting("BACKDROP_ALLOW_URLS")


def fetch_image_url(url: str, *, field: str) -> bytes:
    """The bytes at ``url`` (http or https), following at most 3 checked redirects."""
    if not urls_allowed():
        raise BackdropError("image URLs are turned off on this server (BACKDROP_ALLOW_URLS=1 turns them on); "
                            "send the image as base64", field=field)
    deadline = time.monotonic() + TOTAL_TIMEOUT
    for _ in range(MAX_REDIRECTS + 1):
        response = _get(url, field, deadline)
        if response.status in (301, 302, 303, 307, 308) and response.headers.get("Location"):
            url = urljoin(url, response.headers["Location"])
            response.release_conn()
            continue
        if response.status != 200:
            response.release_conn()
            raise BackdropError(f"fetching {_short(url)} failed with HTTP {response.status}", field=field)
        return _read_capped(response, field, deadline)
    raise BackdropError(f"more than {MAX_REDIRECTS} redirects fetching the image", field=field)


def _get(url: str, field: str, deadline: float):
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise BackdropError(f"{_short(url)} is not a valid URL", field=field) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BackdropError(f"{_short(url)} is not an http(s) URL", field=field)
    address = _checked_address(parts.hostname, port, field)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    timeout = urllib3.Timeout(connect=CONNECT_TIMEOUT, read=max(0.1, deadline - time.monotonic()))
    if parts.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(str(address), port, server_hostname=parts.hostname,
                                           assert_hostname=parts.hostname, timeout=timeout, retries=False)
    else:
        pool = urllib3.HTTPConnectionPool(str(address), port, timeout=timeout, retries=False)
    host_header = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    try:
        return pool.urlopen("GET", path, headers={"Host": host_header, "User-Agent": "Backdrop"},
                            redirect=False, preload_content=False)
    except urllib3.exceptions.HTTPError as exc:
        raise BackdropError(f"could not fetch {_short(url)} ({type(exc).__name__})", field=field) from None


def _checked_address(host: str, port: int, field: str) -> Address:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise BackdropError(f"the host {host!r} could not be resolved", field=field) from None
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    for address in addresses:
        if not _is_allowed(address):
            raise BackdropError(
                f"the URL's host {host!r} resolves to {address}, a loopback, private or link-local address; "
                "only public addresses are fetched", field=field)
    return addresses[0]


def _is_allowed(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in _extra_networks()):
        return True
    return address.is_global and not address.is_multicast


def _extra_networks() -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """BACKDROP_URL_ALLOW_NETWORKS: comma-separated networks a deployment trusts (its own image store)."""
    return setting("BACKDROP_URL_ALLOW_NETWORKS")


def _read_capped(response, field: str, deadline: float) -> bytes:
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > MAX_BYTES:
        response.release_conn()
        raise BackdropError(f"the image at the URL is {int(declared) / 1e6:.1f} MB; the limit is 20 MB", field=field)
    # A host that trickles a byte at a time never trips a per-read timeout: cut the connection at the deadline.
    watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), response.shutdown)
    watchdog.daemon = True
    watchdog.start()
    chunks, total = [], 0
    try:
        for chunk in response.stream(64 * 1024):
            total += len(chunk)
            if total > MAX_BYTES:
                raise BackdropError("the image at the URL is over the 20 MB limit", field=field)
            chunks.append(chunk)
    except (OSError, urllib3.exceptions.HTTPError) as exc:
        if time.monotonic() >= deadline:
            raise BackdropError(f"fetching the image took longer than {TOTAL_TIMEOUT:g} s", field=field) from None
        raise BackdropError(f"the download broke off after {response.tell()} bytes "
                            f"({type(exc).__name__}); check the URL "
                            "or send the image as base64", field=field) from None
    finally:
        watchdog.cancel()
        response.release_conn()
    if time.monotonic() > deadline:
        raise BackdropError(f"fetching the image took longer than {TOTAL_TIMEOUT:g} s", field=field)
    return b"".join(chunks)


def _short(url: str) -> str:
    return url if len(url) <= 80 else url[:77] + "..."
