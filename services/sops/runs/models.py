"""Tables of the sops runs service."""

from __future__ import annotations
