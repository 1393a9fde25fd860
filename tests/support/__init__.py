"""Test support: fixtures and test doubles the tests share (never imported by the product)."""
