"""Tables of the notifications service."""

from __future__ import annotations
