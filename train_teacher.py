"""Seed-compatible entry point: `python train_teacher.py ...` with the seed's flags (see distillers.seed_compat)."""

from distillers.seed_compat import train_teacher

if __name__ == "__main__":
    raise SystemExit(train_teacher())
