"""Tables of the records service."""

from __future__ import annotations
