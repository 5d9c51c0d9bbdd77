"""Fetching an image named by URL (``text/x-url``) without becoming a proxy into private networks.

Only http and https; the host's addresses are resolved first and the request is refused when any of
them lies in a denied network (loopback, private, link-local, ... by default); no redirect is followed;
the download is bounded in bytes and in time. A name that resolves differently between the check and
the connection (DNS rebinding) is not fully closed off: the connection is pinned for plain http, while
https keeps the name for certificate checks.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit, urlunsplit

import httpx

from .config import UrlFetchSettings
from .errors import BadParam, ExtractionFailed


async def _addresses(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise ExtractionFailed(f"the image URL's host {host!r} does not resolve") from None
    return sorted({info[4][0] for info in infos})


def _denied(address: str, networks: list[str]) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    return any(ip in ipaddress.ip_network(network, strict=False) for network in networks)


async def fetch_url(url: str, settings: UrlFetchSettings) -> bytes:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadParam("the body must be an http(s) URL", "url", url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = await _addresses(parts.hostname, port)
    if not addresses or any(_denied(a, settings.denied_networks) for a in addresses):
        raise BadParam("the image URL points into a denied network", "url", url)
    target, headers = url, {}
    if parts.scheme == "http":
        pinned = f"[{addresses[0]}]" if ":" in addresses[0] else addresses[0]
        target = urlunsplit(("http", f"{pinned}:{port}", parts.path or "/", parts.query, ""))
        headers["Host"] = parts.netloc
    try:
        async with httpx.AsyncClient(follow_redirects=False, timeout=settings.timeout_s, trust_env=False) as client:
            async with asyncio.timeout(settings.timeout_s):
                async with client.stream("GET", target, headers=headers) as response:
                    if response.is_redirect:
                        raise ExtractionFailed(f"the image URL redirects ({response.status_code}); "
                                               "redirects are not followed")
                    if response.status_code != 200:
                        raise ExtractionFailed(f"the image URL answered {response.status_code}")
                    chunks, size = [], 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > settings.max_bytes:
                            raise BadParam(f"the image at the URL is larger than {settings.max_bytes} bytes",
                                           "url", url)
                        chunks.append(chunk)
                    return b"".join(chunks)
    except (httpx.HTTPError, TimeoutError) as error:
        raise ExtractionFailed(f"the image URL could not be fetched: {type(error).__name__}") from None
