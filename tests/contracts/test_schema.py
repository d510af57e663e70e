"""The committed JSON Schemas match the models."""

from __future__ import annotations

from schakel.contracts.schema import SCHEMA_DIR, all_schemas, render


def test_committed_schemas_are_fresh() -> None:
    """Every schema file equals what the models generate; regenerate with `make schemas`."""
    wanted = all_schemas()
    on_disk = {p.name for p in SCHEMA_DIR.glob("*.json")}
    assert on_disk == set(wanted), "run `make schemas`"
    for name, schema in wanted.items():
        assert (SCHEMA_DIR / name).read_text("utf-8") == render(schema), f"{name} is stale"


def test_body_schemas_carry_categories() -> None:
    """Implementers in other languages can read each field's data category from the schema."""
    text = render(all_schemas()["body-M1-v1.json"])
    assert '"x-schakel-category": "minderjarige"' in text
