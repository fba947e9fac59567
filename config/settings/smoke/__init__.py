"""Settings of the SQLite smoke suite (tests/smoke): `make run`'s configuration under test."""
