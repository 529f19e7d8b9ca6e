"""Tables of the files service."""

from __future__ import annotations
