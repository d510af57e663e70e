"""Case ids follow from the message that opens the case (ENVELOPE.md 6.1)."""

from __future__ import annotations

import re
from pathlib import Path

from schakel.contracts.ids import CASE_ID_PATTERN, case_id_for, new_message_id

SPEC = Path(__file__).resolve().parents[2] / "contracts" / "ENVELOPE.md"


def test_the_spec_vectors_hold() -> None:
    text = SPEC.read_text("utf-8")
    section = text[text.index("### 6.1 Case ids") :]
    rows = re.findall(r"\| `([0-9a-f-]{36})` \| `(case-[a-z2-7]{26})` \|", section)
    assert len(rows) == 2
    for message_id, case_id in rows:
        assert case_id_for(message_id) == case_id


def test_every_derived_id_is_a_case_id_and_distinct() -> None:
    ids = {case_id_for(new_message_id()) for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(CASE_ID_PATTERN, i) for i in ids)
