"""Fetching an image named by URL (``text/x-url``) without becoming a proxy into private networks.

Only http and https; the host's addresses are resolved first and the request is refused when any of
them is not globally routable, also when it is written in a form that carries an IPv4 address inside an
IPv6 one (IPv4-mapped, IPv4-compatible, 6to4, Teredo, NAT64), unless the operator allowed its network
(``url_fetch.allowed_networks``), or when it lies in ``url_fetch.denied_networks``. The connection goes to
the checked address itself, for https too (the name still serves for SNI and the certificate), so a name
that resolves elsewhere a second time (DNS rebinding) is not asked again, and the address connected to is
checked once more. No redirect is followed; the download is bounded in bytes and in time.
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
    return sorted({str(info[4][0]) for info in infos})


_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def _forms(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses a connection to ``ip`` may end up at: an IPv4-mapped or NAT64 address is only a
    spelling of the IPv4 address inside it; IPv4-compatible, 6to4 and Teredo addresses are judged both
    as themselves and by the IPv4 addresses they carry."""
    if isinstance(ip, ipaddress.IPv4Address):
        return [ip]
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if any(ip in prefix for prefix in _NAT64):
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    forms: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:
        forms.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip.sixtofour is not None:
        forms.append(ip.sixtofour)
    if ip.teredo is not None:
        forms.extend(ip.teredo)  # the Teredo server and the client behind it
    return forms


def refused(address: str, settings: UrlFetchSettings) -> bool:
    """Whether fetching from ``address`` is refused: it, or an IPv4 address written inside it, is not
    globally routable (and not in an allowed network), or lies in a denied network."""
    forms = _forms(ipaddress.ip_address(address.split("%")[0]))
    allowed = [ipaddress.ip_network(network, strict=False) for network in settings.allowed_networks]
    denied = [ipaddress.ip_network(network, strict=False) for network in settings.denied_networks]
    for form in forms:
        if any(form in network for network in denied if network.version == form.version):
            return True
        routable = form.is_global and not (form.is_multicast or form.is_reserved)
        if not routable and not any(form in network for network in allowed if network.version == form.version):
            return True
    return False


async def fetch_url(url: str, settings: UrlFetchSettings) -> bytes:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadParam("the body must be an http(s) URL", "url", url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = await _addresses(parts.hostname, port)
    if not addresses or any(refused(address, settings) for address in addresses):
        raise BadParam("the image URL points to an address that is not publicly routable", "url", url)
    pinned = f"[{addresses[0]}]" if ":" in addresses[0] else addresses[0]
    target = urlunsplit((parts.scheme, f"{pinned}:{port}", parts.path or "/", parts.query, ""))
    headers = {"Host": parts.netloc.rpartition("@")[2]}
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    try:
        async with httpx.AsyncClient(follow_redirects=False, timeout=settings.timeout_s, trust_env=False) as client:
            async with asyncio.timeout(settings.timeout_s):
                async with client.stream("GET", target, headers=headers, extensions=extensions) as response:
                    stream = response.extensions.get("network_stream")
                    peer = stream.get_extra_info("server_addr") if stream is not None else None
                    if peer is None or refused(str(peer[0]), settings):
                        raise BadParam(
                            "the image URL's connection reached an address that is not publicly routable", "url", url
                        )
                    if response.is_redirect:
                        raise ExtractionFailed(
                            f"the image URL redirects ({response.status_code}); redirects are not followed"
                        )
                    if response.status_code != 200:
                        raise ExtractionFailed(f"the image URL answered {response.status_code}")
                    chunks, size = [], 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > settings.max_bytes:
                            raise BadParam(
                                f"the image at the URL is larger than {settings.max_bytes} bytes", "url", url
                            )
                        chunks.append(chunk)
                    return b"".join(chunks)
    except (httpx.HTTPError, TimeoutError) as error:
        raise ExtractionFailed(f"the image URL could not be fetched: {type(error).__name__}") from None
