"""The acceptance rules of task-protocol.md §4, as pure functions on values.

The store looks up what the register already holds, one fact at a time and
only when the rule before leaves the question open, and hands it here; these
functions decide, and refuse with Conflict or Forbidden. Nothing here touches
SQLite: the store runs the SQL a verdict names, inside the task's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kzgate.errors import Conflict, Forbidden
from kzgate.model import InstructionRef, Task
from kzgate.register.audit import AuditEvent

RecordStatus = Literal["applied", "pending", "cancelled", "duplicate"]
InstructionStatus = Literal["active", "resumed", "pending", "cancelled"]


@dataclass(frozen=True, slots=True)
class StoredInstruction:
    """The register's instruction of the same (iss, number, date) as a new task."""

    status: InstructionStatus
    restricted: bool  # its restrict task is stored (a pending one has only a resume)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What an accepted task does: to itself, its instruction, the audit log, enforcement."""

    status: RecordStatus  # the task's status, and its receipt's
    instruction: InstructionStatus  # what its instruction becomes
    event: AuditEvent  # the instruction's audit event
    enforce: Literal["add", "remove"] | None  # what happens to the instruction's targets


# A restrict for an instruction not stored yet: its targets are enforced.
ACTIVATE = Verdict("applied", "active", "instruction_activated", "add")
# A restrict whose resume came first: its targets are kept on record, never enforced.
CANCEL = Verdict("cancelled", "cancelled", "instruction_cancelled", None)
# A resume of an active instruction: what no other active instruction covers is lifted.
RESUME = Verdict("applied", "resumed", "instruction_resumed", "remove")
# A resume of an instruction not stored yet: kept, to cancel its restrict when it comes.
PEND = Verdict("pending", "pending", "resume_pending", None)


def _name(task: Task) -> str:
    return f"task {task.iss}/{task.id}"


def check_duplicate(task: Task, stored_sha256: str) -> None:
    """A task of the same (iss, id) is stored: the same bytes are a duplicate (its
    stored receipt is answered again, nothing is re-applied), other bytes a conflict."""
    if stored_sha256 != task.sha256:
        raise Conflict(f"{_name(task)} is already stored with other payload bytes")


def check_seq(task: Task, holder: str | None) -> None:
    """A seq is used once per issuer; ``holder`` is the id of the task that has it.

    Gaps are allowed: tasks may arrive out of order.
    """
    if holder is not None:
        raise Conflict(f"seq {task.seq} of issuer '{task.iss}' is already used by task {holder}")


def needs_owner(task: Task, instruction: StoredInstruction | None) -> bool:
    """Whether ``judge`` must know which other issuer stored this (number, date), if any:
    only for a resume of an instruction its own issuer has not stored."""
    return task.type == "resume" and instruction is None


def judge(task: Task, instruction: StoredInstruction | None, owner: str | None) -> Verdict:
    """What a new task does to its instruction, or the refusal.

    ``instruction`` is the stored one of the task's (iss, number, date);
    ``owner`` another issuer with a stored restrict of the same (number, date),
    asked for only when ``needs_owner`` says so.
    """
    ref = InstructionRef(task.iss, task.instruction.number, task.instruction.date)
    if task.type == "restrict":
        if instruction is not None and instruction.restricted:
            raise Conflict(
                f"instruction {ref.label()} is already stored ({_name(task)} repeats it)"
            )
        return ACTIVATE if instruction is None else CANCEL
    if instruction is not None:
        if instruction.status != "active":
            raise Conflict(
                f"instruction {ref.label()} is already {instruction.status} ({_name(task)})"
            )
        return RESUME
    if owner is not None:  # only the issuer of an instruction can resume it
        raise Forbidden(f"instruction No. {ref.number} of {ref.date} belongs to issuer '{owner}'")
    return PEND
