"""The end-to-end fast-path tests reuse the CLI tests' tiny CIFAR-100 and teacher (session fixtures)."""

from cli.conftest import cifar, teacher  # noqa: F401 - fixtures
