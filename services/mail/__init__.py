"""Mail: requesting a message inside a transaction, and delivering it from a worker."""
