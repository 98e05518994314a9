"""Egress filtering as nftables rules: pure functions from a layout and a policy to nft text.

Each sandbox with egress gets a *slot*: a network namespace with a veth pair (`eth0` inside,
`<prefix>-<slot>` on the host), one IPv4 address of the instance's network (`Layout`), a
default route through the gateway address (on every host end of the pairs) and, on the host,
a chain and a set of its own in the instance's table:

    table inet mist<tag>
      input:    from a sandbox, only DNS to the gateway (mist's resolver) is accepted
      forward:  from a sandbox: established flows of this slot's generation; then the deny set
                (other sandboxes, link-local/metadata, multicast, the operator's egress_deny);
                then the slot's chain: its source address, then its allow set
                  (daddr . l4proto . dport intervals); everything else rejected
                to a sandbox: only replies (ct state established,related)
      postrouting: masquerade what leaves the instance's network

Worked example: slot 5 of network 100.64.16.0/20 is `mist1a2b3c-5`, address 100.64.16.7
(slot + 2), gateway 100.64.16.1. Its function allows "203.0.113.0/24:443", so
`allow_elements` gives `add element inet mist1a2b3c a5 { 203.0.113.0/24 . tcp . 443,
203.0.113.0/24 . udp . 443 }`. A connection to 203.0.113.9:443 passes chain s5 and is marked
with the slot's generation; a connection to 10.0.0.1:80, to another sandbox (100.64.16.9) or
to 169.254.169.254 is rejected (EHOSTUNREACH at once), and one to the gateway or any other
address of the host reaches the input hook and is rejected there: the host's services,
mist's own ports included, are never reachable.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

# Always denied, whatever a function allows: the addresses of every mist instance's sandboxes
# (100.64.0.0/10 is where instances take their networks by default), link-local (cloud
# metadata services live at 169.254.169.254), this-network, loopback, multicast and reserved.
BUILTIN_DENY = ("0.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/3")
ALL_PORTS = (1, 65535)


@dataclass(frozen=True)
class Rule:
    """One egress rule: a host name (resolved by mist's resolver) or a network, and ports."""

    host: str | None
    net: ipaddress.IPv4Network | None
    ports: tuple[int, int] = ALL_PORTS


def parse(rule: str) -> Rule:
    """A canonical rule (`models.egress_rule`) as a Rule."""
    dest, _, port = rule.partition(":")
    ports = ALL_PORTS
    if port:
        lo, _, hi = port.partition("-")
        ports = (int(lo), int(hi or lo))
    if dest[:1].isdigit() and "/" in dest:
        return Rule(None, ipaddress.IPv4Network(dest), ports)
    return Rule(dest, None, ports)


@dataclass(frozen=True)
class Layout:
    """Names and addresses of one mist instance's sandbox network."""

    tag: str  # 6 hex digits from the data dir
    network: ipaddress.IPv4Network  # e.g. 100.64.16.0/20

    @property
    def table(self) -> str:
        return f"mist{self.tag}"

    @property
    def prefix(self) -> str:
        """Every host-side interface of this instance starts with this (<= 11 characters)."""
        return f"mist{self.tag}-"

    @property
    def gateway(self) -> str:
        return str(self.network.network_address + 1)

    @property
    def slots(self) -> int:
        return self.network.num_addresses - 3  # network, gateway, broadcast

    def address(self, slot: int) -> str:
        if not 0 <= slot < self.slots:
            raise ValueError(f"slot {slot} is outside {self.network}")
        return str(self.network.network_address + 2 + slot)

    def iface(self, slot: int) -> str:
        return f"{self.prefix}{slot:x}"

    def netns(self, slot: int) -> str:
        return self.iface(slot)


def base_ruleset(layout: Layout, deny: tuple[str, ...] = ()) -> str:
    """The instance's table (replacing any previous one of the same name)."""
    t, p, gw = layout.table, layout.prefix, layout.gateway
    nets = ", ".join(sorted({*BUILTIN_DENY, str(layout.network), *deny}, key=_net_key))
    return f"""\
table inet {t}
delete table inet {t}
table inet {t} {{
  set deny {{ type ipv4_addr; flags interval; auto-merge; elements = {{ {nets} }} }}
  map slots {{ type ifname : verdict; }}
  chain input {{
    type filter hook input priority filter - 5; policy accept;
    iifname "{p}*" jump from_sandbox_to_host
  }}
  chain from_sandbox_to_host {{
    ip daddr {gw} udp dport 53 accept
    reject with icmpx admin-prohibited
  }}
  chain forward {{
    type filter hook forward priority filter - 5; policy accept;
    iifname "{p}*" jump from_sandbox
    oifname "{p}*" ct state established,related accept
    oifname "{p}*" drop
  }}
  chain from_sandbox {{
    meta nfproto ipv6 drop
    ip daddr @deny reject with icmpx admin-prohibited
    iifname vmap @slots
    reject with icmpx admin-prohibited
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {layout.network} oifname != "{p}*" masquerade
  }}
}}
"""


def _net_key(net: str) -> tuple[int, int]:
    n = ipaddress.IPv4Network(net, strict=False)
    return (int(n.network_address), n.prefixlen)


def add_slot(layout: Layout, slot: int, generation: int) -> str:
    """The slot's set and chain, and its entry in the dispatch map. Flows are marked with the
    slot's `generation` (unique per use of a slot), so a flow of a previous sandbox in this
    slot is never taken for an established flow of the next."""
    t, iface, addr = layout.table, layout.iface(slot), layout.address(slot)
    return (
        f"add set inet {t} a{slot} {{ type ipv4_addr . inet_proto . inet_service; flags interval; }}\n"
        f"add chain inet {t} s{slot}\n"
        f"flush chain inet {t} s{slot}\n"
        f"flush set inet {t} a{slot}\n"
        f"add rule inet {t} s{slot} ip saddr != {addr} drop\n"
        f"add rule inet {t} s{slot} ct state established,related ct mark {generation} accept\n"
        f"add rule inet {t} s{slot} ct state new ip daddr . meta l4proto . th dport @a{slot} "
        f"ct mark set {generation} accept\n"
        f'add element inet {t} slots {{ "{iface}" : jump s{slot} }}\n'
    )


def remove_slot(layout: Layout, slot: int) -> str:
    t = layout.table
    return (
        f'delete element inet {t} slots {{ "{layout.iface(slot)}" }}\n'
        f"delete chain inet {t} s{slot}\n"
        f"delete set inet {t} a{slot}\n"
    )


def allow_elements(layout: Layout, slot: int, targets: list[tuple[str, tuple[int, int]]]) -> str:
    """`add element` for (network or address, ports) pairs, TCP and UDP; "" if none."""
    items = []
    for net, (lo, hi) in targets:
        ports = str(lo) if lo == hi else f"{lo}-{hi}"
        items += [f"{net} . tcp . {ports}", f"{net} . udp . {ports}"]
    if not items:
        return ""
    return f"add element inet {layout.table} a{slot} {{ {', '.join(items)} }}\n"


def static_targets(rules: list[Rule]) -> list[tuple[str, tuple[int, int]]]:
    """What a function's network rules allow before any name is resolved."""
    return [(str(r.net), r.ports) for r in rules if r.net is not None]


def host_ports(rules: list[Rule], name: str) -> list[tuple[int, int]]:
    """The port ranges the rules allow to host `name` (lowercase, no trailing dot); [] if the
    name is not allowed: mist's resolver answers it with NXDOMAIN and asks nobody."""
    return [r.ports for r in rules if r.host == name]


def host_setup(layout: Layout, slot: int) -> str:
    """`ip -batch` input, run in the host's namespace: the slot's namespace and veth pair."""
    ns, iface = layout.netns(slot), layout.iface(slot)
    return (
        f"netns add {ns}\n"
        f"link add {iface} type veth peer name eth0 netns {ns}\n"
        f"link set {iface} addrgenmode none\n"
        f"addr add {layout.gateway}/32 dev {iface}\n"
        f"link set {iface} up\n"
        f"route add {layout.address(slot)}/32 dev {iface} src {layout.gateway}\n"
    )


def inside_setup(layout: Layout, slot: int) -> str:
    """`ip -n NETNS -batch` input: the sandbox's side (no IPv6: no link-local address)."""
    addr, gw = layout.address(slot), layout.gateway
    return (
        "link set eth0 addrgenmode none\n"
        f"addr add {addr}/32 dev eth0\n"
        "link set eth0 up\n"
        "link set lo up\n"
        f"route add {gw}/32 dev eth0 src {addr}\n"
        f"route add default via {gw} dev eth0 src {addr}\n"
    )


def forward_guard(uplinks: list[str]) -> str:
    """The table kept on a host where mist turned IPv4 forwarding on for `uplinks` (it was off):
    what arrives on them is forwarded only to mist's sandboxes, as if forwarding were still off
    for everything else. Shared by every mist instance on the host and never removed (the
    forwarding it guards stays on)."""
    names = ", ".join(f'"{u}"' for u in sorted(uplinks))
    return f"""\
table inet mist_forward_guard {{
  set uplinks {{ type ifname; }}
  chain forward {{
    type filter hook forward priority filter - 10; policy accept;
    iifname @uplinks oifname != "mist*" drop
  }}
}}
add element inet mist_forward_guard uplinks {{ {names} }}
"""
