"""The lookup index the DNS hot path consults: restricted names and prefixes.

Names are keyed by their lower-case wire form, so a query's name can be matched
straight from the packet: the name and each parent suffix are one probe each.
They live in a NameTable (kzgate/nametable.py: compiled, about 40 octets a name,
and a probe allocates nothing and usually reads one cache line; a dict without
the C module), each mapped to the number of its InstructionRef in ``refs``.
"""

from __future__ import annotations

import ipaddress

from kzgate.model import InstructionRef
from kzgate.names import IPNetwork, domain_to_wire
from kzgate.nametable import NameTable, new_name_table


class PolicyIndex:
    """Restricted domains (with their subdomains) and IP prefixes, with one naming ref each."""

    def __init__(self, names: NameTable | None = None) -> None:
        self._names = names if names is not None else new_name_table()
        # One number per instruction ever named here: the table stores numbers, not refs.
        self._refs: list[InstructionRef] = []
        self._ref_numbers: dict[InstructionRef, int] = {}
        self._prefixes: dict[IPNetwork, InstructionRef] = {}
        # prefix length -> network ints, per IP version, for address lookups
        self._by_len: dict[int, dict[int, set[int]]] = {4: {}, 6: {}}

    def __len__(self) -> int:
        return len(self._names) + len(self._prefixes)

    def copy_onto(self, names: NameTable) -> PolicyIndex:
        """The same policy over an empty ``names`` table (a DNS worker that must run no C)."""
        out = PolicyIndex(names)
        for wire, number in self._names.items():
            names.set(wire, number)
        out._refs = list(self._refs)
        out._ref_numbers = dict(self._ref_numbers)
        for net, ref in self._prefixes.items():
            out.set_prefix(net, ref)
        return out

    @property
    def name_table(self) -> NameTable:
        """The live names, read in place by the C fast path; never replaced."""
        return self._names

    @property
    def refs(self) -> list[InstructionRef]:
        """The name table's values: number -> InstructionRef; only ever appended to."""
        return self._refs

    def _number(self, ref: InstructionRef) -> int:
        number = self._ref_numbers.get(ref)
        if number is None:
            number = self._ref_numbers[ref] = len(self._refs)
            self._refs.append(ref)
        return number

    @property
    def domain_count(self) -> int:
        return len(self._names)

    @property
    def prefix_count(self) -> int:
        return len(self._prefixes)

    def set_domain(self, name: str, ref: InstructionRef) -> None:
        self._names.set(domain_to_wire(name), self._number(ref))

    def remove_domain(self, name: str) -> None:
        self._names.discard(domain_to_wire(name))

    def set_prefix(self, net: IPNetwork, ref: InstructionRef) -> None:
        self._prefixes[net] = ref
        self._by_len[net.version].setdefault(net.prefixlen, set()).add(int(net.network_address))

    def remove_prefix(self, net: IPNetwork) -> None:
        if self._prefixes.pop(net, None) is None:
            return
        nets = self._by_len[net.version].get(net.prefixlen)
        if nets is not None:
            nets.discard(int(net.network_address))
            if not nets:
                del self._by_len[net.version][net.prefixlen]

    def domains(self) -> dict[str, InstructionRef]:
        refs = self._refs
        return {_wire_to_text(k): refs[v] for k, v in self._names.items()}

    def prefixes(self) -> dict[IPNetwork, InstructionRef]:
        return dict(self._prefixes)

    def lookup_wire(self, qname: bytes) -> InstructionRef | None:
        """Match a lower-case wire-form name (ending in the root octet) and its parents."""
        hit = self._names.match(qname)
        return None if hit is None else self._refs[hit[1]]

    def lookup_wire_at(self, qname: bytes) -> tuple[int, InstructionRef] | None:
        """The matched instruction, and the offset in ``qname`` where the matched suffix
        starts (the DNS engine points the block answer's SOA owner at it).

        One probe per label, from the whole name up to the TLD.
        """
        hit = self._names.match(qname)
        return None if hit is None else (hit[0], self._refs[hit[1]])

    def lookup_name(self, name: str) -> InstructionRef | None:
        """Match a normalized domain name and its parents."""
        return self.lookup_wire(domain_to_wire(name))

    def lookup_ip(self, address: str) -> tuple[IPNetwork, InstructionRef] | None:
        """The enforced prefix containing ``address``, if any."""
        addr = ipaddress.ip_address(address)
        bits = addr.max_prefixlen
        value = int(addr)
        for length, nets in self._by_len[addr.version].items():
            start = value >> (bits - length) << (bits - length) if length else 0
            if start in nets:
                net = ipaddress.ip_network((start, length))
                return net, self._prefixes[net]
        return None


def _wire_to_text(wire: bytes) -> str:
    labels = []
    off = 0
    while wire[off]:
        labels.append(wire[off + 1 : off + 1 + wire[off]].decode("ascii"))
        off += wire[off] + 1
    return ".".join(labels)
