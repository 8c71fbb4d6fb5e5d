"""The processor's operations catalogue as a fixture file (catalogue.json), so that the gateway's
fake ProcessorService serves the real catalogue without importing the processor. A test fails
when the file is stale; rewrite it with `python -m tests.gateway.catalogue_fixture`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).with_name("catalogue.json")


def generate() -> str:
    """The catalogue as ProcessorService.ListOperations (and so GET /operations) serves it, as JSON."""
    from services.processor import operations

    return json.dumps(operations.catalogue(), indent=1) + "\n"


def load() -> list[dict[str, Any]]:
    return json.loads(FIXTURE.read_text())


def defaults(task_type: str) -> dict[str, Any]:
    """The params an operation gets when the client sends none."""
    (op,) = [o for o in load() if o["name"] == task_type]
    properties = op["params_schema"]["properties"]
    return {name: prop["default"] for name, prop in properties.items() if "default" in prop}


if __name__ == "__main__":
    FIXTURE.write_text(generate())
    print(f"wrote {FIXTURE}")
