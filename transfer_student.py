"""Seed-compatible entry point: `python transfer_student.py ...` with the seed's flags (see distillers.seed_compat)."""

from distillers.seed_compat import transfer_student

if __name__ == "__main__":
    raise SystemExit(transfer_student())
