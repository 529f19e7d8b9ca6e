"""The shared web layer: what every page and every user-facing message uses (translations, locale
negotiation, static assets and the pinned front-end packages they include)."""
