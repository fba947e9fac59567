"""Helpers shared by the test packages: the broker probe, the outbox, personas, factories per app.

Registered as pytest plugins in tests/conftest.py (`pytest_plugins`), so their fixtures are
available everywhere; plain helpers are imported from their module.
"""
