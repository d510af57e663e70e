"""Body contracts: one per message type, strict, every field tagged with a data category."""

from __future__ import annotations

import typing

import pytest
from pydantic import BaseModel

from schakel.contracts.bodies import (
    BODIES,
    CATEGORY_KEY,
    Section,
    body_contract,
    categories_of,
    contract_categories,
    parse_body,
)
from schakel.contracts.enums import DataCategory, MessageType
from schakel.contracts.errors import ContractError
from schakel.contracts.examples import example_body


def test_every_message_type_has_a_contract() -> None:
    """Every message type of PROCESS.md (and M6R) has a version-1 body contract."""
    assert {mt for mt, _ in BODIES} == set(MessageType)


def _leaf_fields(model: type[BaseModel], seen: set[type[BaseModel]]) -> list[str]:
    untagged = []
    seen.add(model)
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and CATEGORY_KEY in extra:
            continue
        models = [
            a
            for a in (*typing.get_args(info.annotation), info.annotation)
            if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        nested = [
            m
            for a in typing.get_args(info.annotation)
            for m in (*typing.get_args(a), a)
            if isinstance(m, type) and issubclass(m, BaseModel)
        ]
        if models or nested:
            for m in set(models + nested) - seen:
                untagged += _leaf_fields(m, seen)
        elif not (model is Section and name == "tekst"):
            untagged.append(f"{model.__name__}.{name}")
    return untagged


@pytest.mark.parametrize("cls", list(BODIES.values()), ids=lambda c: c.__name__)
def test_every_field_is_tagged(cls: type[BaseModel]) -> None:
    """No body field escapes the category check: each is tagged or a tagged model."""
    assert _leaf_fields(cls, set()) == []


@pytest.mark.parametrize("message_type", list(MessageType))
def test_example_round_trips_strictly(message_type: MessageType) -> None:
    """Each example body survives JSON encoding and strict parsing unchanged."""
    body = example_body(message_type)
    again = parse_body(message_type, 1, body.model_dump_json().encode())
    assert again == body
    assert categories_of(body) <= contract_categories(type(body))


def test_m2_carries_only_a_status() -> None:
    """M2 has exactly one field, the status; adding the decision breaks the contract."""
    assert set(body_contract(MessageType.M2, 1).model_fields) == {"status"}
    with pytest.raises(ContractError, match="extra_forbidden"):
        parse_body(MessageType.M2, 1, b'{"status":"AFGEHANDELD","besluit":"OPSCHALEN"}')
    with pytest.raises(ContractError):
        parse_body(MessageType.M2, 1, b'{"status":"GESLOTEN"}')


def test_m15_has_no_identifying_fields() -> None:
    """M15 (advice) cannot hold any personal data category."""
    assert contract_categories(body_contract(MessageType.M15, 1)) == frozenset()


def test_categories_follow_content() -> None:
    """Categories are those of fields that hold something; a false flag holds nothing."""
    signal = example_body(MessageType.M1)
    assert categories_of(signal) == {
        DataCategory.IDENTIFICEREND,
        DataCategory.MINDERJARIGE,
        DataCategory.RELIGIE_LEVENSOVERTUIGING,
    }
    adult = signal.model_copy(update={"minderjarig": False})
    assert DataCategory.MINDERJARIGE not in categories_of(adult)


def test_parse_error_names_field_not_value() -> None:
    """A contract error says where, never what: content must not reach logs."""
    with pytest.raises(ContractError) as info:
        parse_body(MessageType.M2, 1, b'{"status":"Noor van Fictief"}')
    assert "Noor" not in str(info.value)


def test_unknown_contract_version() -> None:
    """An unknown contract version is a contract error, not a crash."""
    with pytest.raises(ContractError, match="no contract"):
        body_contract(MessageType.M1, 99)
