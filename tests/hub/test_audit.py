"""How the audit trail reads for people, and what a sender is told about its header."""

from __future__ import annotations

import datetime as dt

from schakel.adapters.client import Refusal
from schakel.contracts.canonical import canonical_json
from schakel.contracts.enums import MessageType, ReasonCode
from schakel.contracts.examples import example_body, example_draft
from schakel.contracts.ids import OrgId, new_message_id
from schakel.harness.scenarios import POL, ZVH
from schakel.hub.audit import AuditRecord, format_record, verify_chain
from tests.hub.conftest import PairFactory


def _record(event: str, reason: ReasonCode | None) -> AuditRecord:
    return AuditRecord.model_validate(
        {"index": 3, "prev": "0" * 64, "at": dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC),
         "hub": "hub-1", "event": event, "sender": ZVH, "message_id": new_message_id(),
         "message_type": MessageType.M7, "recipients": [POL], "reason": reason}
    )  # fmt: skip


def test_every_kind_of_record_reads_as_what_it_is() -> None:
    """`schakel audit show` prints a receipt as a receipt, not as "REFUSED None"."""
    assert "receipted" in format_record(_record("receipted", None))
    assert "None" not in format_record(_record("receipted", None))
    assert "dead-lettered UNDELIVERABLE" in format_record(
        _record("dead-lettered", ReasonCode.UNDELIVERABLE)
    )
    assert "REFUSED   NOT_PERMITTED" in format_record(_record("refused", ReasonCode.NOT_PERMITTED))


async def test_a_header_fields_refusal_names_the_fields(pair: PairFactory) -> None:
    """HEADER_FIELDS_INVALID tells the sender which fields, by their names in the spec."""
    async with pair() as system:
        body = example_body(MessageType.M1)
        draft = example_draft(MessageType.M1, body).model_copy(update={"regie_gemeente": None})
        await system.pol.send(body, draft, [OrgId(ZVH)])
        item = await system.pol.receive(timeout=30)
        assert isinstance(item, Refusal), item
        assert item.notice.reason is ReasonCode.HEADER_FIELDS_INVALID
        assert item.notice.text.endswith("(fields: regie_gemeente)")
        await item.ack()


def test_a_record_placed_in_the_chain_is_its_canonical_form() -> None:
    """The writer's one-dump sealing gives what the reader recomputes: the canonical
    encoding of the placed record, and a hash over it without the hash."""
    record = AuditRecord.model_validate(
        {"index": 0, "prev": "", "at": dt.datetime(2026, 11, 26, tzinfo=dt.UTC), "hub": "h",
         "event": "refused", "sender": "GEM.westerstad", "reason": "DUPLICATE",
         "detail": 'quotes " and \\ and "hash":"" in a detail'}
    )  # fmt: skip
    placed, line = record.placed(7, "a" * 64)
    assert line == canonical_json(placed)
    assert placed.hash == placed.compute_hash()
    assert (placed.index, placed.prev) == (7, "a" * 64)
    assert verify_chain([(1, line)]).problem == "index 7, expected 0"
