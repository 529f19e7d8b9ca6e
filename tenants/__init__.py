"""The tenant-aware kernel: tenants, memberships, entities, the current-tenant context and isolation.

This package imports nothing from ``services``: it is what services stand on.
"""
