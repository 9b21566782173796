"""SPEC §1: the address grammar, its canonical form, and its errors."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socketeer import Address, AddressError
from socketeer.address import ACCEPTED_FORMS, UNIX_PATH_MAX


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("tcp://127.0.0.1:80", "tcp://127.0.0.1:80"),
        ("TCP://Example.COM:443", "tcp://example.com:443"),
        ("tcp4://localhost:1", "tcp4://localhost:1"),
        ("tcp6://[::1]:443", "tcp6://[::1]:443"),
        ("udp://[0:0::1]:53", "udp://[::1]:53"),
        ("udp4://127.0.0.1:0", "udp4://127.0.0.1:0"),
        ("udp6://[fe80::1%eth0]:5", "udp6://[fe80::1%eth0]:5"),
        ("tls://example.com:443", "tls://example.com:443"),
        ("localhost:80", "tcp://localhost:80"),
        ("[::1]:9", "tcp://[::1]:9"),
        (":8080", "tcp://:8080"),
        ("8080", "tcp://:8080"),
        ("unix:/run/app.sock", "unix:/run/app.sock"),
        ("unix:///run/app.sock", "unix:/run/app.sock"),
        ("unix:relative.sock", "unix:relative.sock"),
        ("unix://relative.sock", "unix:relative.sock"),
        ("unix:////double", "unix:////double"),
        ("unix:@name", "unix:@name"),
        ("unix-dgram:/tmp/d.sock", "unix-dgram:/tmp/d.sock"),
        ("unix-dgram:@name", "unix-dgram:@name"),
        ("fd:3", "fd:3"),
        ("systemd:", "fd:3"),
    ],
)
def test_valid_forms_and_canonical_text(text: str, canonical: str) -> None:
    address = Address.parse(text)
    assert str(address) == canonical
    assert Address.parse(canonical) == address


def test_fields() -> None:
    a = Address.parse("udp6://[::1]:53")
    assert (a.scheme, a.host, a.port, a.is_datagram, a.is_stream, a.ip_version) == (
        "udp6",
        "::1",
        53,
        True,
        False,
        6,
    )
    u = Address.parse("unix:@x")
    assert u.abstract and u.path == "x" and u.is_unix and u.is_stream
    assert Address.parse("tls://h:1").is_tls
    assert Address.parse("tcp://1.2.3.4:5").ip_version == 4
    assert Address.parse("tcp://h:5").ip_version is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty address"),
        ("ftp://host:21", "unknown scheme 'ftp'"),
        ("tcp://host", "missing a port"),
        ("host", "missing a scheme or port"),
        ("tcp://host:", "missing port"),
        ("tcp://host:http", "port 'http' is not a number"),
        ("tcp://host:-1", "port '-1' is not a number"),
        ("tcp://host:65536", "port 65536 is above 65535"),
        ("tcp://host:999999", "port '999999' is not a number"),
        ("[::1:80", "unbalanced brackets"),
        ("::1]:80", "unbalanced brackets"),
        ("[::1]]:80", "unbalanced brackets"),
        ("[::1]", "missing port after ']'"),
        ("::1:80", "IPv6 literals must be in brackets"),
        ("[nothex]:80", "is not an IPv6 address"),
        ("tcp4://[::1]:80", "tcp4 needs an IPv4 address"),
        ("tcp6://127.0.0.1:80", "tcp6 needs an IPv6 address"),
        ("bad host:80", "is not a host name"),
        ("-bad:80", "is not a host name"),
        ("udp:80", "missing '//' after the scheme"),
        ("unix:", "empty path"),
        ("unix://", "empty path"),
        ("unix:@", "empty abstract name"),
        ("unix-dgram:", "empty path"),
        ("unix:/tmp/" + "x" * 200, "longer than the"),
        ("unix:@" + "x" * 200, "abstract name is"),
        ("unix:/tmp/a\0b", "NUL"),
        ("fd:x", "is not a number"),
    ],
)
def test_malformed_addresses_name_the_problem_and_the_forms(text: str, reason: str) -> None:
    with pytest.raises(AddressError) as info:
        Address.parse(text)
    message = str(info.value)
    assert reason in message
    assert ACCEPTED_FORMS in message
    assert "\n" not in message
    assert info.value.exit_code == 2


def test_unix_path_limit_is_exact() -> None:
    ok = "/" + "p" * (UNIX_PATH_MAX - 1)
    assert Address.parse("unix:" + ok).path == ok
    with pytest.raises(AddressError):
        Address.parse("unix:" + ok + "p")


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(AddressError, match="out of range"):
        Address("tcp", host="h", port=70000)
    with pytest.raises(AddressError, match="unknown scheme"):
        Address("sctp", host="h", port=1)
    with pytest.raises(AddressError, match="abstract socket"):
        Address("unix", path="@looks-abstract")


def test_address_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        Address.parse("nope")


# -- properties ---------------------------------------------------------------------

_label = st.from_regex(r"[a-z0-9]([a-z0-9_-]{0,10}[a-z0-9])?", fullmatch=True)


def _not_an_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return True
    return False


# Names, not IP literals: labels of digits alone can spell "0.0.0.0", which
# tcp6:// rightly refuses as a host.
hostnames = st.lists(_label, min_size=1, max_size=4).map(".".join).filter(_not_an_ip)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)
path_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\0")
paths = st.text(path_chars, min_size=1, max_size=60).filter(
    lambda p: not p.startswith("@") and len(p.encode("utf-8", "surrogateescape")) <= UNIX_PATH_MAX
)


@st.composite
def addresses(draw: st.DrawFn) -> Address:
    kind = draw(st.sampled_from(["inet", "inet4", "inet6", "unix", "fd"]))
    if kind == "unix":
        scheme = draw(st.sampled_from(["unix", "unix-dgram"]))
        abstract = draw(st.booleans())
        path = draw(paths)
        if abstract:
            return Address(scheme, path=path.lstrip("@") or "a", abstract=True)
        return Address(scheme, path=path)
    if kind == "fd":
        return Address("fd", fd=draw(st.integers(0, 10**6)))
    if kind == "inet4":
        scheme = draw(st.sampled_from(["tcp4", "udp4"]))
        host = draw(st.one_of(ipv4, hostnames, st.just("")))
    elif kind == "inet6":
        scheme = draw(st.sampled_from(["tcp6", "udp6"]))
        host = draw(st.one_of(ipv6, hostnames, st.just("")))
    else:
        scheme = draw(st.sampled_from(["tcp", "udp", "tls"]))
        host = draw(st.one_of(ipv4, ipv6, hostnames, st.just("")))
    return Address(scheme, host=host, port=draw(ports))


@given(addresses())
def test_parse_of_str_is_identity(address: Address) -> None:
    assert Address.parse(str(address)) == address


@given(st.text(max_size=80))
def test_garbage_raises_only_address_error(text: str) -> None:
    try:
        address = Address.parse(text)
    except AddressError:
        return
    assert Address.parse(str(address)) == address


@given(st.from_regex(r"(tcp|udp|unix|unix-dgram|tls|tcp6|fd)(:|://)[\[\]:@/0-9a-f.x%-]{0,30}"))
def test_near_misses_raise_only_address_error(text: str) -> None:
    try:
        address = Address.parse(text)
    except AddressError:
        return
    assert Address.parse(str(address)) == address


_OCTETS = st.one_of(
    st.integers(0, 300).map(str),
    st.integers(0, 99).map(lambda n: f"0{n}"),  # leading zeros: not an IPv4 literal
)


@given(st.lists(_OCTETS, min_size=3, max_size=5).map(".".join))
def test_ipv4_literals_are_what_ipaddress_says(text: str) -> None:
    """The fast IPv4 check on every accepted connection agrees with ipaddress."""
    import ipaddress

    from socketeer.address import _IPV4

    try:
        ipaddress.IPv4Address(text)
        expected = True
    except ValueError:
        expected = False
    assert bool(_IPV4.fullmatch(text)) is expected


@pytest.mark.parametrize(
    ("text", "literal"),
    [
        ("tcp://127.0.0.1:1", True),
        ("[::1]:1", True),
        ("tcp6://[fe80::1%lo]:1", True),
        ("tcp://localhost:1", False),
        ("udp://example.test:53", False),
    ],
)
def test_ip_literals_need_no_lookup(text: str, literal: bool) -> None:
    assert Address.parse(text).is_ip_literal is literal
