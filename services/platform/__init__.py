"""Platform concerns: health, readiness, the embedded runtime."""
