"""Tables of the automation service."""

from __future__ import annotations
