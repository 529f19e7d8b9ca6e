"""Guiju's services: each one has the same rooms (models, service, routes, schemas, actors)."""
