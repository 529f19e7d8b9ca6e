"""Validation of procedure definitions on publish: one test per kind of problem, and all at once."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from services.sops.procedures.validation import ValidationContext, decode_definition, validate

MEMBER = uuid.uuid4()
OTHER_PROCEDURE = uuid.uuid4()
THIS_PROCEDURE = uuid.uuid4()
ORDER_FIELDS = {"status": "select", "sales_rep": "user", "promised_on": "date", "total": "money"}


def context(*, linked: bool = True) -> ValidationContext:
    return ValidationContext(
        procedure_id=THIS_PROCEDURE,
        record_fields=ORDER_FIELDS if linked else None,
        member_ids=frozenset({MEMBER}),
        procedure_ids=frozenset({OTHER_PROCEDURE}),
    )


def task(key: str, next_key: str | None = None, **extra: Any) -> dict[str, Any]:
    step = {"kind": "task", "key": key, "title": key.title(), "owner": {"kind": "role", "role": "member"}}
    return {**step, "next": next_key, **extra}


def problems(definition: dict[str, Any], *, linked: bool = True) -> set[tuple[str, str]]:
    _decoded, found = validate(definition, context(linked=linked))
    return {(p.pointer, p.code) for p in found}


def flow(*steps: dict[str, Any], start: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"start": start or steps[0]["key"], "steps": list(steps), **extra}


def test_a_sound_procedure_has_no_problem() -> None:
    definition = flow(
        task("pick", "split"),
        {"kind": "parallel", "key": "split", "title": "Split", "branches": ["pack", "invoice"], "join": "meet"},
        task("pack", "meet"),
        task("invoice", "meet"),
        {"kind": "join", "key": "meet", "title": "Meet", "next": "check"},
        {
            "kind": "decision",
            "key": "check",
            "title": "Check",
            "branches": [{"when": "record.total.amount > 100000 and data.weight > 2", "next": "approve"}],
            "default": "ship",
        },
        {
            "kind": "approval",
            "key": "approve",
            "title": "Approve",
            "owner": {"kind": "member", "user_id": str(MEMBER)},
            "on_reject": {"goto": "pack_again"},
            "next": "ship",
        },
        task("pack_again", "approve"),
        {
            "kind": "form",
            "key": "ship",
            "title": "Ship",
            "owner": {"kind": "field", "field": "record.sales_rep"},
            "due": {"within": {"days": 1}, "relative_to": "record.promised_on"},
            "fields": [
                {"key": "tracking", "label": "Tracking", "type": "text"},
                {"key": "status", "label": "Status", "type": "select", "target": "record"},
            ],
            "next": "follow_up",
        },
        {"kind": "subprocedure", "key": "follow_up", "title": "Follow up", "procedure_id": str(OTHER_PROCEDURE)},
        data=[{"key": "weight", "type": "number"}],
    )
    assert problems(definition) == set()


def test_decoding_problems_are_listed_for_every_step() -> None:
    decoded, found = decode_definition(
        flow(
            {"kind": "task", "key": "a", "title": "A", "owner": {"kind": "role", "role": "boss"}},
            {"kind": "teleport", "key": "b", "title": "B"},
            task("c", unknown_field=1),
        )
    )
    assert decoded is None
    assert {(p.pointer, p.code) for p in found} == {
        ("/steps/0/owner/role", "invalid_step"),
        ("/steps/1/kind", "invalid_step"),
        ("/steps/2/unknown_field", "invalid_step"),
    }


def test_duplicate_step_keys() -> None:
    assert ("/steps/1/key", "duplicate_step_key") in problems(flow(task("a", "b"), task("a")))


def test_start_and_references_must_name_steps() -> None:
    found = problems(flow(task("a", "missing"), start="nope"))
    assert {("/start", "unknown_step"), ("/steps/0/next", "unknown_step")} <= found


def test_unreachable_steps() -> None:
    assert problems(flow(task("a"), task("lost"))) == {("/steps/1", "unreachable_step")}


def test_exception_fallbacks_make_steps_reachable() -> None:
    kind = {"key": "damaged", "label": "Damaged", "fallback": ["call_customer"]}
    assert problems(flow(task("a", exceptions=[kind]), task("call_customer"))) == set()


def test_loops_without_an_exit() -> None:
    found = problems(flow(task("a", "b"), task("b", "c"), task("c", "b")))
    assert found == {("/steps/1", "loop_without_exit")}
    # The same loop with a way out is fine.
    decision = {
        "kind": "decision",
        "key": "c",
        "title": "C",
        "branches": [{"when": "data.done", "next": None}],
        "default": "b",
    }
    assert problems(flow(task("a", "b"), task("b", "c"), decision, data=[{"key": "done", "type": "boolean"}])) == set()


def test_a_join_without_a_split() -> None:
    found = problems(flow(task("a", "meet"), {"kind": "join", "key": "meet", "title": "Meet"}))
    assert ("/steps/1", "join_without_split") in found


def test_a_parallel_whose_join_is_not_a_join_step() -> None:
    split = {"kind": "parallel", "key": "split", "title": "Split", "branches": ["x", "y"], "join": "z"}
    found = problems(flow(split, task("x", "z"), task("y", "z"), task("z")))
    assert ("/steps/0/join", "join_not_a_join_step") in found


def test_a_branch_that_ends_before_its_join_or_never_reaches_it() -> None:
    split = {"kind": "parallel", "key": "split", "title": "Split", "branches": ["x", "y", "w"], "join": "meet"}
    found = problems(
        flow(
            split,
            task("x", "meet"),
            task("y"),  # ends the run before the join
            task("w", "w2"),
            task("w2", "w"),  # loops forever, never reaching the join
            {"kind": "join", "key": "meet", "title": "Meet"},
        )
    )
    assert {("/steps/0/branches/1", "branch_ends_before_join"), ("/steps/0/branches/2", "branch_misses_join")} <= found


def test_a_join_entered_from_outside_its_split() -> None:
    split = {"kind": "parallel", "key": "split", "title": "Split", "branches": ["x", "y"], "join": "meet"}
    decision = {
        "kind": "decision",
        "key": "start",
        "title": "Start",
        "branches": [{"when": "data.rush", "next": "sneak"}],
        "default": "split",
    }
    found = problems(
        flow(
            decision,
            split,
            task("x", "meet"),
            task("y", "meet"),
            task("sneak", "meet"),
            {"kind": "join", "key": "meet", "title": "Meet"},
            data=[{"key": "rush", "type": "boolean"}],
        )
    )
    assert found == {("/steps/4", "join_entered_outside_split")}


def test_conditions_that_do_not_compile_or_read_unknown_data() -> None:
    decision = {
        "kind": "decision",
        "key": "d",
        "title": "D",
        "branches": [
            {"when": "data.total >", "next": None},
            {"when": "data.nothing == 1", "next": None},
            {"when": "record.colour == 'red'", "next": None},
            {"when": "secret.key == 1", "next": None},
        ],
    }
    assert problems(flow(decision)) == {
        ("/steps/0/branches/0/when", "invalid_condition"),
        ("/steps/0/branches/1/when", "unknown_data"),
        ("/steps/0/branches/2/when", "unknown_record_field"),
        ("/steps/0/branches/3/when", "unknown_name"),
    }


def test_record_names_need_a_linked_collection() -> None:
    decision = {
        "kind": "decision",
        "key": "d",
        "title": "D",
        "branches": [{"when": "record.status == 'paid'", "next": None}],
    }
    assert problems(flow(decision), linked=False) == {("/steps/0/branches/0/when", "no_linked_collection")}


def test_the_linked_record_id_is_a_record_name() -> None:
    action = {
        "kind": "action",
        "key": "invoice",
        "title": "Invoice",
        "plugin": "erp",
        "action": "generate_invoices",
        "input": {"record_id": "record.id"},
    }
    assert problems(flow(action)) == set()
    assert problems(flow(action), linked=False) == {("/steps/0/input/record_id", "no_linked_collection")}
    not_a_person = task("a", owner={"kind": "field", "field": "record.id"})
    assert problems(flow(not_a_person)) == {("/steps/0/owner/field", "not_a_user_field")}


def test_data_written_by_forms_and_actions_is_known() -> None:
    form = {
        "kind": "form",
        "key": "measure",
        "title": "Measure",
        "owner": {"kind": "starter"},
        "fields": [{"key": "weight", "label": "Weight", "type": "number"}],
        "next": "quote",
    }
    action = {"kind": "action", "key": "quote", "title": "Quote", "plugin": "shipping", "action": "quote", "next": "d"}
    decision = {
        "kind": "decision",
        "key": "d",
        "title": "D",
        "branches": [{"when": "data.weight > 20 and data.quote.price > 0", "next": None}],
    }
    assert problems(flow(form, action, decision)) == set()


def test_owner_due_and_wait_fields_must_be_known() -> None:
    found = problems(
        flow(
            task(
                "a",
                "w",
                owner={"kind": "field", "field": "record.nobody"},
                due={"within": {"hours": 4}, "relative_to": "data.when"},
            ),
            {"kind": "wait", "key": "w", "title": "W", "until": "record.status", "next": "v"},
            {"kind": "wait", "key": "v", "title": "V"},
        )
    )
    assert found == {
        ("/steps/0/owner/field", "unknown_record_field"),
        ("/steps/0/due/relative_to", "unknown_data"),
        ("/steps/1/until", "not_a_date_field"),
        ("/steps/2", "wait_without_end"),
    }


def test_form_fields_with_unknown_types_or_a_record_target_without_collection() -> None:
    form = {
        "kind": "form",
        "key": "f",
        "title": "F",
        "owner": {"kind": "starter"},
        "fields": [
            {"key": "colour", "label": "Colour", "type": "rainbow"},
            {"key": "status", "label": "Status", "type": "select", "target": "record"},
        ],
    }
    assert problems(flow(form), linked=False) == {
        ("/steps/0/fields/0/type", "unknown_field_type"),
        ("/steps/0/fields/1/target", "no_linked_collection"),
    }


def test_approvals_need_somewhere_for_a_rejection_to_go() -> None:
    approval = {"kind": "approval", "key": "ok", "title": "OK", "owner": {"kind": "role", "role": "manager"}}
    assert problems(flow(approval)) == {("/steps/0/on_reject", "approval_without_on_reject")}
    raising = {**approval, "on_reject": {"raise_exception": "refused"}}
    assert problems(flow(raising)) == {("/steps/0/on_reject/raise_exception", "unknown_exception_kind")}
    declared = {**raising, "exceptions": [{"key": "refused", "label": "Refused", "then": "abort"}]}
    assert problems(flow(declared)) == set()


def test_named_owners_must_be_members() -> None:
    stranger = {"kind": "member", "user_id": str(uuid.uuid4())}
    found = problems(
        flow(task("a", owner=stranger, exceptions=[{"key": "late", "label": "Late", "notify": [stranger]}]))
    )
    assert found == {
        ("/steps/0/owner/user_id", "unknown_member"),
        ("/steps/0/exceptions/0/notify/0/user_id", "unknown_member"),
    }


def test_subprocedures_must_exist_and_not_be_the_procedure_itself() -> None:
    found = problems(
        flow(
            {"kind": "subprocedure", "key": "a", "title": "A", "procedure_id": str(uuid.uuid4()), "next": "b"},
            {"kind": "subprocedure", "key": "b", "title": "B", "procedure_id": str(THIS_PROCEDURE)},
        )
    )
    assert found == {("/steps/0/procedure_id", "unknown_procedure"), ("/steps/1/procedure_id", "subprocedure_is_self")}


def test_a_procedure_with_many_faults_gets_them_all_listed_at_once() -> None:
    definition = flow(
        task("a", "b", owner={"kind": "member", "user_id": str(uuid.uuid4())}),
        task("b", "c"),
        task("c", "b"),  # b <-> c: a loop without an exit
        task("b"),  # duplicate key
        task("island", "nowhere"),  # unreachable, and an unknown reference
        {"kind": "join", "key": "meet", "title": "Meet"},  # unreachable, and no split
        {"kind": "decision", "key": "d", "title": "D", "branches": [{"when": "data.x ==", "next": None}]},
        {"kind": "approval", "key": "ok", "title": "OK", "owner": {"kind": "starter"}},
        {"kind": "subprocedure", "key": "me", "title": "Me", "procedure_id": str(THIS_PROCEDURE)},
    )
    found = problems(definition, linked=False)
    assert {
        ("/steps/0/owner/user_id", "unknown_member"),
        ("/steps/1", "loop_without_exit"),
        ("/steps/3/key", "duplicate_step_key"),
        ("/steps/4", "unreachable_step"),
        ("/steps/4/next", "unknown_step"),
        ("/steps/5", "join_without_split"),
        ("/steps/6/branches/0/when", "invalid_condition"),
        ("/steps/7/on_reject", "approval_without_on_reject"),
        ("/steps/8/procedure_id", "subprocedure_is_self"),
    } <= found


def test_the_guides_example_is_a_valid_procedure() -> None:
    guide = (Path(__file__).resolve().parents[2] / "docs" / "procedures.md").read_text(encoding="utf-8")
    example = guide.split("<!-- example: order_fulfilment -->\n```json\n", 1)[1].split("\n```", 1)[0]
    fields = {"code": "text", "status": "select", "sales_rep": "user", "promised_on": "date", "total": "money"}
    decoded, found = validate(json.loads(example), ValidationContext(record_fields=fields))
    assert found == []
    assert decoded is not None and len(decoded.steps) == 14
