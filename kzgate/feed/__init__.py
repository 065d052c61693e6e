"""Pulling each issuer's signed log (task-protocol.md §6): no task is lost when a push is."""
