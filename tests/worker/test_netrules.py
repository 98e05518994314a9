"""The egress rules as nftables sees them, and the messages of mist's resolver (pure)."""

import ipaddress

import pytest

from mist.worker import dnsmsg, netrules
from mist.worker.netrules import Layout, Rule

LAYOUT = Layout("1a2b3c", ipaddress.IPv4Network("100.64.16.0/20"))


def test_slot_names_and_addresses_follow_the_worked_example():
    assert (LAYOUT.iface(5), LAYOUT.address(5), LAYOUT.gateway) == ("mist1a2b3c-5", "100.64.16.7", "100.64.16.1")
    assert len(LAYOUT.iface(LAYOUT.slots - 1)) <= 15  # IFNAMSIZ
    assert LAYOUT.slots == 4093
    with pytest.raises(ValueError):
        LAYOUT.address(LAYOUT.slots)


@pytest.mark.parametrize(
    ("rule", "parsed"),
    [
        ("pypi.org:443", Rule("pypi.org", None, (443, 443))),
        ("pypi.org", Rule("pypi.org", None, (1, 65535))),
        ("203.0.113.0/24:80-90", Rule(None, ipaddress.IPv4Network("203.0.113.0/24"), (80, 90))),
    ],
)
def test_canonical_rules_parse(rule, parsed):
    assert netrules.parse(rule) == parsed


def test_networks_are_allowed_at_once_for_tcp_and_udp_and_names_only_when_resolved():
    rules = [netrules.parse(r) for r in ("203.0.113.0/24:443", "pypi.org:443", "pypi.org:80")]
    assert netrules.allow_elements(LAYOUT, 5, netrules.static_targets(rules)) == (
        "add element inet mist1a2b3c a5 { 203.0.113.0/24 . tcp . 443, 203.0.113.0/24 . udp . 443 }\n")
    assert netrules.host_ports(rules, "pypi.org") == [(443, 443), (80, 80)]
    assert netrules.host_ports(rules, "files.pypi.org") == []
    assert netrules.allow_elements(LAYOUT, 5, []) == ""


def test_the_deny_set_holds_every_sandbox_network_metadata_and_the_operators_networks():
    text = netrules.base_ruleset(LAYOUT, deny=("10.0.0.0/8",))
    deny = next(line for line in text.splitlines() if "set deny" in line)
    for net in ("100.64.0.0/10", "169.254.0.0/16", "127.0.0.0/8", "10.0.0.0/8", "224.0.0.0/3"):
        assert net in deny
    assert 'iifname "mist1a2b3c-*" jump from_sandbox_to_host' in text
    assert "ip daddr 100.64.16.1 udp dport 53 accept" in text


def test_a_slot_accepts_only_its_own_source_and_its_own_generations_flows():
    text = netrules.add_slot(LAYOUT, 5, 77)
    assert "ip saddr != 100.64.16.7 drop" in text
    assert "ct state established,related ct mark 77 accept" in text
    assert "@a5 ct mark set 77 accept" in text
    assert '"mist1a2b3c-5" : jump s5' in text


def test_dns_queries_parse_and_answers_carry_a_records():
    q = dnsmsg.parse_query(dnsmsg.query_bytes(0x1234, "PyPI.org"))
    assert q is not None and (q.id, q.name, q.qtype) == (0x1234, "pypi.org", dnsmsg.A)
    out = dnsmsg.answer(q, dnsmsg.NOERROR, ["203.0.113.80", "203.0.113.81"], ttl=30)
    assert out[:2] == b"\x12\x34" and out[3] & 0xF == dnsmsg.NOERROR
    assert int.from_bytes(out[6:8], "big") == 2 and out.endswith(bytes([203, 0, 113, 81]))
    refused = dnsmsg.answer(q, dnsmsg.NXDOMAIN, ["203.0.113.80"])
    assert refused[3] & 0xF == dnsmsg.NXDOMAIN and int.from_bytes(refused[6:8], "big") == 0


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" * 11,
        dnsmsg.query_bytes(1, "a.b")[:-2],  # truncated
        bytes([0x12, 0x34, 0x81, 0x80]) + dnsmsg.query_bytes(1, "a.b")[4:],  # a response, not a query
        dnsmsg.query_bytes(1, "a.b")[:12] + b"\xc0\x0c\x00\x01\x00\x01",  # compression pointer
        dnsmsg.query_bytes(1, "a.b")[:4] + b"\x00\x02" + dnsmsg.query_bytes(1, "a.b")[6:],  # two questions
    ],
)
def test_anything_but_a_plain_query_is_dropped(data):
    assert dnsmsg.parse_query(data) is None
