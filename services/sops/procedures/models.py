"""Tables of the sops procedures service."""

from __future__ import annotations
