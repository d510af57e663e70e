"""JSON Schema for the envelope header and every body contract.

The schemas are generated from the models and committed under ``contracts/schemas/`` for
partners who implement Schakel in other languages; a test fails when they are stale.
Regenerate with ``python -m contracts.schema`` (or ``make schemas``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from schakel.contracts.bodies import BODIES
from schakel.contracts.header import EnvelopeHeader

__all__ = [
    "SCHEMA_DIR",
    "all_schemas",
    "main",
    "render",
]

SCHEMA_DIR = Path(__file__).parent / "schemas"
_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def all_schemas() -> dict[str, dict[str, Any]]:
    """Return every schema by file name."""
    schemas: dict[str, dict[str, Any]] = {
        "header.json": {"$schema": _DIALECT, **EnvelopeHeader.model_json_schema()}
    }
    for (message_type, version), cls in sorted(BODIES.items()):
        schema = cls.model_json_schema()
        schema["title"] = f"{message_type} {message_type.title} v{version}"
        schemas[f"body-{message_type}-v{version}.json"] = {"$schema": _DIALECT, **schema}
    return schemas


def render(schema: dict[str, Any]) -> str:
    """The committed text of a schema."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> int:
    """Write the schemas into ``contracts/schemas/``, removing stale files."""
    SCHEMA_DIR.mkdir(exist_ok=True)
    wanted = all_schemas()
    for stale in {p.name for p in SCHEMA_DIR.glob("*.json")} - wanted.keys():
        (SCHEMA_DIR / stale).unlink()
    for name, schema in wanted.items():
        (SCHEMA_DIR / name).write_text(render(schema), encoding="utf-8")
    sys.stdout.write(f"wrote {len(wanted)} schemas to {SCHEMA_DIR}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
