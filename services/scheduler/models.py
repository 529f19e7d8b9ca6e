"""Tables of the scheduler service."""

from __future__ import annotations
