"""Where a webhook may go (app/webhooks/targets.py): the address rule, the URL rule and the
operator's allow-list, without a server. tests/app/test_webhooks.py sends through the guard."""

from ipaddress import ip_address

import pytest

from app.config import Settings, get_settings
from app.webhooks.targets import TargetRefused, check_url, is_public, parse_allow_list

REFUSED = [
    "127.0.0.1", "127.255.255.254", "::1",  # loopback
    "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "fc00::1", "fd12:3456::1",  # private
    "169.254.169.254", "169.254.0.1", "fe80::1",  # link-local, the cloud metadata service
    "0.0.0.0", "::",  # unspecified
    "224.0.0.1", "239.255.255.250", "ff02::1",  # multicast
    "240.0.0.1", "255.255.255.255", "192.0.2.1", "2001:db8::1",  # reserved, documentation
    "100.64.0.1", "100.127.255.254",  # shared (CGNAT)
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",  # IPv4-mapped
    "::127.0.0.1", "::a00:1",  # IPv4-compatible
    "64:ff9b::a00:1", "2002:a00:1::1", "2002:7f00:1::1",  # NAT64, 6to4 of private ones
    "fec0::1",  # site-local
]  # fmt: skip
PUBLIC = ["93.184.215.14", "1.1.1.1", "100.128.0.1", "2606:4700::1111", "::ffff:1.1.1.1",
          "64:ff9b::101:101"]  # fmt: skip


@pytest.mark.parametrize("address", REFUSED)
def test_addresses_that_are_not_public_are_refused(address: str) -> None:
    assert not is_public(ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_not(address: str) -> None:
    assert is_public(ip_address(address))


def test_the_allow_list_takes_names_addresses_and_networks() -> None:
    allowed = parse_allow_list(["Hooks.Internal.", "10.20.0.0/16", "127.0.0.1", "fd00::/8"])
    assert allowed.allows_host("hooks.internal") and allowed.allows_host("HOOKS.internal.")
    assert not allowed.allows_host("other.internal")
    for address in ["10.20.3.4", "127.0.0.1", "::ffff:127.0.0.1", "fd00::5"]:
        assert allowed.allows_address(ip_address(address)), address
    for address in ["10.21.0.1", "127.0.0.2", "::1", "fc00::1"]:
        assert not allowed.allows_address(ip_address(address)), address


@pytest.mark.parametrize(
    "entries", ["10.0.0.0/33", "hooks internal", "http://hooks.internal", "a_b"]
)
def test_a_malformed_allow_list_entry_stops_the_settings(entries: str) -> None:
    with pytest.raises(ValueError, match="DISTILL_WEBHOOK_ALLOWED_HOSTS"):
        Settings(webhook_allowed_hosts=entries)  # type: ignore[arg-type]


def test_the_allow_list_setting_is_comma_separated() -> None:
    settings = Settings(webhook_allowed_hosts=" hooks.internal, 10.0.0.0/8 ,")  # type: ignore[arg-type]
    assert settings.webhook_allowed_hosts == ("hooks.internal", "10.0.0.0/8")


@pytest.fixture
def no_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(get_settings(), "webhook_allowed_hosts", ())


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook", "file:///etc/passwd", "http:///hook",
        "http://user:pass@example.com/hook", "https://token@example.com/hook",
        "http://localhost:8000/hook", "http://LOCALHOST./hook", "http://api.localhost/hook",
        "http://127.0.0.1/hook", "http://[::1]/hook", "http://[::ffff:127.0.0.1]/hook",
        "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", "http://[fd00::1]/",
    ],
)  # fmt: skip
def test_urls_refused_whatever_they_resolve_to(no_allow_list: None, url: str) -> None:
    with pytest.raises(TargetRefused):
        check_url(url)


def test_names_and_public_addresses_wait_for_the_connect(no_allow_list: None) -> None:
    check_url("https://hooks.example.com/distillery")
    check_url("http://93.184.215.14:8080/hook")
    check_url("http://2130706433/hook")  # not an address to ipaddress: resolved when sent


def test_the_allow_list_lets_an_internal_receiver_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(get_settings(), "webhook_allowed_hosts", ("10.0.0.0/8", "localhost"))
    check_url("http://10.1.2.3/hook")
    check_url("http://localhost:8000/hook")
    with pytest.raises(TargetRefused):
        check_url("http://192.168.0.1/hook")
    with pytest.raises(TargetRefused):
        check_url("http://user:pass@10.1.2.3/hook")  # credentials never
