"""The lookup index the DNS hot path consults: the restricted names.

Names are keyed by their lower-case wire form, so a query's name can be matched
straight from the packet: the name and each parent suffix are one probe each.
They live in a NameTable (kzgate/nametable.py: compiled, about 40 octets a name,
and a probe allocates nothing and usually reads one cache line; a dict without
the C module), each mapped to the number of its InstructionRef in ``refs``.
Prefixes are not held here: DNS cannot enforce them (nftables does), and an
address is looked up in the register (register/readmodel.py).
"""

from __future__ import annotations

from kzgate.model import InstructionRef
from kzgate.names import domain_to_wire
from kzgate.nametable import NameTable, new_name_table


class PolicyIndex:
    """Restricted domains (with their subdomains), with one naming ref each."""

    def __init__(self, names: NameTable | None = None) -> None:
        self._names = names if names is not None else new_name_table()
        # One number per instruction ever named here: the table stores numbers, not refs.
        self._refs: list[InstructionRef] = []
        self._ref_numbers: dict[InstructionRef, int] = {}

    def copy_onto(self, names: NameTable) -> PolicyIndex:
        """The same policy over an empty ``names`` table (a DNS worker that must run no C)."""
        out = PolicyIndex(names)
        for wire, number in self._names.items():
            names.set(wire, number)
        out._refs = list(self._refs)
        out._ref_numbers = dict(self._ref_numbers)
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

    def set_domain(self, name: str, ref: InstructionRef) -> None:
        self._names.set(domain_to_wire(name), self._number(ref))

    def remove_domain(self, name: str) -> None:
        self._names.discard(domain_to_wire(name))

    def domains(self) -> dict[str, InstructionRef]:
        refs = self._refs
        return {_wire_to_text(k): refs[v] for k, v in self._names.items()}

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


def _wire_to_text(wire: bytes) -> str:
    labels = []
    off = 0
    while wire[off]:
        labels.append(wire[off + 1 : off + 1 + wire[off]].decode("ascii"))
        off += wire[off] + 1
    return ".".join(labels)
