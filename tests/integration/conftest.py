"""Integration tests share ``lab_pki`` and ``realstack`` from tests/conftest.py."""
