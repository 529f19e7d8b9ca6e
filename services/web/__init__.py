"""The shared web layer: static assets and the pinned front-end packages they include."""
