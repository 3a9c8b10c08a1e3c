"""The Anju test suite: unit, integration, end-to-end and fault tests."""
