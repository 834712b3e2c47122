"""Tests of distillers.data, and tiny real-format datasets for other suites (fake_data)."""
