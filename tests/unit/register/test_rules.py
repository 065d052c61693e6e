"""The acceptance rules of task-protocol.md §4 on plain values, without SQLite.

test_store.py checks that the store asks them the right facts and writes what
they decide; here each rule is checked against the protocol's words.
"""

from __future__ import annotations

from typing import get_args

import pytest

from kzgate.errors import Conflict, Forbidden
from kzgate.register.rules import (
    ACTIVATE,
    CANCEL,
    PEND,
    RESUME,
    InstructionStatus,
    StoredInstruction,
    Verdict,
    check_duplicate,
    check_seq,
    judge,
    needs_owner,
)
from kzgate.register.schema import MIGRATIONS
from tests.support.register_fixtures import restrict, resume

DOM = [("domain", "example.kz")]
RESTRICT = restrict("t1", 1, "100", DOM)
RESUME_TASK = resume("t2", 2, "100")


def stored(status: InstructionStatus, *, restricted: bool = True) -> StoredInstruction:
    return StoredInstruction(status, restricted)


# -- the same (iss, id), the same seq -------------------------------------------------


def test_same_id_same_bytes_is_a_duplicate() -> None:
    check_duplicate(RESTRICT, RESTRICT.sha256)  # no refusal: the stored receipt is answered


def test_same_id_other_bytes_is_a_conflict() -> None:
    with pytest.raises(Conflict, match="task mci/t1 is already stored with other payload bytes"):
        check_duplicate(RESTRICT, "0" * 64)


def test_a_free_seq_is_accepted_whatever_the_gaps() -> None:
    check_seq(restrict("t9", 9000, "100", DOM), None)


def test_a_seq_used_by_another_task_is_a_conflict() -> None:
    with pytest.raises(Conflict, match="seq 1 of issuer 'mci' is already used by task t0"):
        check_seq(RESTRICT, "t0")


# -- restrict ---------------------------------------------------------------------------


def test_restrict_of_a_new_instruction_is_applied_and_enforced() -> None:
    assert judge(RESTRICT, None, None) is ACTIVATE
    assert (ACTIVATE.status, ACTIVATE.instruction, ACTIVATE.enforce) == ("applied", "active", "add")


def test_restrict_after_its_resume_is_cancelled_and_never_enforced() -> None:
    assert judge(RESTRICT, stored("pending", restricted=False), None) is CANCEL
    assert (CANCEL.status, CANCEL.instruction, CANCEL.enforce) == ("cancelled", "cancelled", None)


@pytest.mark.parametrize("status", ["active", "resumed", "cancelled"])
def test_a_second_restrict_of_an_instruction_is_a_conflict(status: InstructionStatus) -> None:
    with pytest.raises(Conflict, match=r"mci No\. 100 of 2026-11-01 is already stored"):
        judge(RESTRICT, stored(status), None)


def test_restrict_never_asks_for_another_issuer() -> None:
    assert not needs_owner(RESTRICT, None)
    assert not needs_owner(RESTRICT, stored("pending", restricted=False))
    # and would not be refused by one: two issuers may each order their own No. 100
    assert judge(RESTRICT, None, "sts") is ACTIVATE


# -- resume -----------------------------------------------------------------------------


def test_resume_of_an_active_instruction_lifts_it() -> None:
    assert not needs_owner(RESUME_TASK, stored("active"))
    assert judge(RESUME_TASK, stored("active"), None) is RESUME
    assert (RESUME.status, RESUME.instruction, RESUME.enforce) == ("applied", "resumed", "remove")


@pytest.mark.parametrize("status", ["resumed", "pending", "cancelled"])
def test_resume_of_an_instruction_no_longer_active_is_a_conflict(
    status: InstructionStatus,
) -> None:
    stored_inst = stored(status, restricted=status != "pending")
    with pytest.raises(Conflict, match=f"is already {status} \\(task mci/t2\\)"):
        judge(RESUME_TASK, stored_inst, None)


def test_resume_of_an_unknown_instruction_is_kept_pending() -> None:
    assert needs_owner(RESUME_TASK, None)
    assert judge(RESUME_TASK, None, None) is PEND
    assert (PEND.status, PEND.instruction, PEND.enforce) == ("pending", "pending", None)


def test_resume_of_another_issuers_instruction_is_forbidden() -> None:
    with pytest.raises(Forbidden, match=r"No\. 100 of 2026-11-01 belongs to issuer 'sts'"):
        judge(RESUME_TASK, None, "sts")


# -- the verdicts -------------------------------------------------------------------------


def test_every_verdict_is_distinct_and_each_instruction_status_is_the_schemas() -> None:
    verdicts = [ACTIVATE, CANCEL, RESUME, PEND]
    assert len({(v.status, v.instruction, v.event) for v in verdicts}) == 4
    assert all(isinstance(v, Verdict) for v in verdicts)
    statuses = get_args(InstructionStatus)
    assert {v.instruction for v in verdicts} == set(statuses)
    check = ", ".join(f"'{s}'" for s in statuses)
    assert f"status IN ({check})" in MIGRATIONS[0]


def test_only_an_active_instruction_is_enforced() -> None:
    """A target is enforced while an active instruction covers it: only the verdict
    that makes an instruction active adds, only the one that ends it removes."""
    for v in (ACTIVATE, CANCEL, RESUME, PEND):
        assert (v.enforce == "add") == (v.instruction == "active")
        assert (v.enforce == "remove") == (v.instruction == "resumed")
