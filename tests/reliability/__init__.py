"""Reliability and safety: training runs survive faults and bad input (each test runs the real CLI)."""
