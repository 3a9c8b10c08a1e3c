"""Webhooks to property managers' and supervisors' tools: outbox, signing, delivery."""
