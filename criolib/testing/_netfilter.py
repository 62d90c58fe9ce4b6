"""Snapshots of iptables chains, so tests and benchmarks of CNI plugins can undo them.

The portmap and firewall plugins create chains (CNI-HOSTPORT-*, CNI-FORWARD, ...)
that outlive the attachments that made them; a test bed must leave the host as it
found it.
"""

from __future__ import annotations

import shlex

from criolib._exec import run

__all__ = ["drop_new_iptables_chains", "iptables_chains"]


def _save() -> list[str]:
    return run(["iptables-save"], timeout=30, what="iptables").stdout.decode().splitlines()


def iptables_chains() -> dict[str, set[str]]:
    """Every chain of every table, by table (``iptables-save``'s ``:CHAIN`` lines)."""
    out: dict[str, set[str]] = {}
    table = ""
    for line in _save():
        if line.startswith("*"):
            table = line[1:]
            out[table] = set()
        elif line.startswith(":"):
            out[table].add(line[1:].split()[0])
    return out


def drop_new_iptables_chains(before: dict[str, set[str]]) -> None:
    """Remove chains made since ``before`` (:func:`iptables_chains`) and the jumps into them."""
    rules = _save()
    for table, chains in iptables_chains().items():
        new = chains - before.get(table, set())
        if not new:
            continue
        current = ""
        for line in rules:
            if line.startswith("*"):
                current = line[1:]
            elif current == table and line.startswith("-A "):
                words = shlex.split(line)
                if "-j" in words and words[words.index("-j") + 1] in new:
                    run(["iptables", "-t", table, "-D", *words[1:]], check=False, timeout=30)
        for chain in new:
            run(["iptables", "-t", table, "-F", chain], check=False, timeout=30)
        for chain in new:
            run(["iptables", "-t", table, "-X", chain], check=False, timeout=30)
