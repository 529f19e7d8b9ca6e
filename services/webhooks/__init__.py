"""Webhook subscriptions: third parties receive the workspace's events, signed (Standard Webhooks)."""
