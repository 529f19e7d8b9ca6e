"""Tables of the sops calendar service."""

from __future__ import annotations
