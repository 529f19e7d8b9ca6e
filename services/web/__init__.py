"""The shared web layer: what every page and every user-facing message uses (translations, locale
negotiation)."""
