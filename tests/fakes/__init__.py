"""Test doubles that speak real protocols over loopback (no mocks of our own code)."""
