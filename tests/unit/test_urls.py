"""Which addresses an image URL may be fetched from (serve_app/urls.py); over HTTP in test_api.py."""

from __future__ import annotations

import pytest

from serve_app.config import UrlFetchSettings
from serve_app.urls import refused

DEFAULTS = UrlFetchSettings()
SITE = UrlFetchSettings(allowed_networks=["10.1.2.0/24"], denied_networks=["93.184.216.0/24", "2606:4700::/32"])


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "::1",
        "0.0.0.0",
        "::",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "100.64.0.1",
        "169.254.169.254",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "fe80::1%eth0",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:7f00:1",
        "::127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "2002:7f00:1::",
        "2002:a9fe:a9fe::1",  # 6to4 of loopback, of the metadata address
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
        "64:ff9b::7f00:1",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b:1::a00:1",  # NAT64, well-known and local-use
    ],
)
def test_addresses_not_globally_routable_are_refused_in_every_spelling(address):
    assert refused(address, DEFAULTS)


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"]
)
def test_public_addresses_are_fetched(address):
    assert not refused(address, DEFAULTS)


def test_operators_allow_their_own_networks_and_deny_public_ones():
    assert not refused("10.1.2.3", SITE) and not refused("::ffff:10.1.2.3", SITE)
    assert refused("10.1.3.1", SITE)
    assert refused("93.184.216.34", SITE) and refused("2606:4700::1111", SITE)
    assert not refused("93.184.216.34", DEFAULTS)


def test_a_network_that_is_not_one_is_refused_at_start():
    with pytest.raises(ValueError, match="allowed_networks|does not appear"):
        UrlFetchSettings(allowed_networks=["10.1.2.0/33"])
