"""HTTP routes of the scheduler service: parse, call the service, shape the answer."""

from __future__ import annotations

from litestar import Controller

# Composed into the app by services.app.
CONTROLLERS: list[type[Controller]] = []
