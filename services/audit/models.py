"""Tables of the audit service."""

from __future__ import annotations
