"""Seed-compatible entry point: `python train_student.py ...` with the seed's flags (see distillers.seed_compat)."""

from distillers.seed_compat import train_student

if __name__ == "__main__":
    raise SystemExit(train_student())
