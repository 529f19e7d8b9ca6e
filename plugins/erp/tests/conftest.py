"""Fixtures of the erp plugin's tests: the harness and a local Odoo speaking JSON-RPC."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from erp_odoo_fake import FakeOdoo, running_odoo
from erp_testing import CheckedHarness
from guiju_erp import plugin


@pytest.fixture
def harness() -> CheckedHarness:
    checked = CheckedHarness(plugin, name="erp")
    assert checked.registrations.problems == []
    return checked


@pytest.fixture(scope="session")
def odoo_server() -> Iterator[FakeOdoo]:
    with running_odoo() as odoo:
        yield odoo


@pytest.fixture
def odoo(odoo_server: FakeOdoo) -> FakeOdoo:
    odoo_server.reset()
    return odoo_server
