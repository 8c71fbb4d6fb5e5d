"""The fake ProcessorService serves tests/gateway/catalogue.json: it must be the processor's real
catalogue, so that the gateway's tests cannot drift from it."""

from __future__ import annotations

from tests.gateway import catalogue_fixture


def test_the_fixture_is_the_processors_catalogue() -> None:
    assert catalogue_fixture.FIXTURE.read_text() == catalogue_fixture.generate(), (
        "tests/gateway/catalogue.json is stale: run `python -m tests.gateway.catalogue_fixture`"
    )
