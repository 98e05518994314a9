"""The pure parts of pip's jail: the environment it gets, the nftables rules of its uid, what
must be bound back under directories others cannot traverse."""

import os
import shutil
import tempfile
from pathlib import Path

from mist.control.buildjail import blocked_ancestor, jail_env, nameservers, network_rules


def test_pip_gets_a_minimal_environment_without_mists_variables():
    env = jail_env({"MIST_SECRETS_KEY": "k", "MIST_API_KEY": "mist_x", "AWS_SECRET_ACCESS_KEY": "s",
                    "PIP_INDEX_URL": "https://mirror/simple", "https_proxy": "http://proxy:3128", "HOME": "/root"})
    assert not [k for k in env if k.startswith(("MIST_", "AWS_"))]
    assert env["PIP_INDEX_URL"] == "https://mirror/simple" and env["https_proxy"] == "http://proxy:3128"
    assert env["HOME"] == "/tmp/build/home"


def test_the_build_uid_may_resolve_names_but_reaches_no_host_address_metadata_or_denied_network():
    rules = network_rules("mist_build_t", 70001, ["10.255.255.53", "fd00::53"], ["192.168.0.0/16", "fd12::/16"])
    assert "meta skuid != 70001 accept" in rules  # everybody else untouched
    assert "th dport 53 ip daddr { 10.255.255.53 } accept" in rules
    assert "th dport 53 ip6 daddr { fd00::53 } accept" in rules
    assert rules.index("dport 53") < rules.index('oifname "lo" drop')  # DNS first, then the drops
    assert "fib daddr type local drop" in rules
    assert "169.254.0.0/16" in rules and "100.64.0.0/10" in rules and "192.168.0.0/16" in rules
    assert rules.startswith("table inet mist_build_t\ndelete table inet mist_build_t\n")  # replaces itself


def test_nameservers_come_from_resolv_conf(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\nnameserver bogus\nsearch x\n")
    assert nameservers(str(conf)) == ["10.0.0.2", "fe80::1"]
    assert nameservers(str(tmp_path / "absent")) == []


def test_the_highest_directory_others_cannot_traverse_is_found():
    base = Path(tempfile.mkdtemp(dir="/var/tmp"))  # pytest's own tmp root is private itself
    try:
        os.chmod(base, 0o755)
        private = base / "home"
        (private / "inner" / "tree").mkdir(parents=True)
        os.chmod(private, 0o700)
        os.chmod(private / "inner", 0o700)
        assert blocked_ancestor(str(private / "inner" / "tree")) == str(private)
        os.chmod(private, 0o755)
        os.chmod(private / "inner", 0o755)
        assert blocked_ancestor(str(private / "inner" / "tree")) is None
    finally:
        shutil.rmtree(base)
