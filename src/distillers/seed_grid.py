"""The seed README's CIFAR-100 grid, defined once: its teacher -> student pairs and its table rows.

The sweep runs this grid and the report orders its columns by it, so both read the same constants.
"""

from __future__ import annotations

# The columns of the seed README's two tables, in order: (teacher, student), registry model names.
SEED_PAIRS: tuple[tuple[str, str], ...] = (
    ("wrn_40_2", "wrn_16_2"), ("wrn_40_2", "wrn_40_1"), ("resnet56", "resnet20"), ("resnet110", "resnet20"),
    ("resnet110", "resnet32"), ("resnet32x4", "resnet8x4"), ("vgg13", "vgg8"),
    ("vgg13", "MobileNetV2"), ("ResNet50", "MobileNetV2"), ("ResNet50", "vgg8"), ("resnet32x4", "ShuffleV1"),
    ("resnet32x4", "ShuffleV2"), ("wrn_40_2", "ShuffleV1"),
)
# The same pairs as the sweep's ``--pairs TEACHER:STUDENT`` items.
SEED_PAIR_ARGS: tuple[str, ...] = tuple(f"{teacher}:{student}" for teacher, student in SEED_PAIRS)
# The rows of the seed README's tables, in order: registry method names, ``+kd`` adds KD (``-a 1``).
SEED_METHODS: tuple[str, ...] = ("kd", "fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "ab", "ft", "fsp", "nst",
                                 "crd", "crd+kd", "icd", "icd+kd", "rrd", "rrd+kd")


def pair_rank(pair: tuple[str, str]) -> tuple:
    """Sort key of a teacher -> student column: the seed's pairs in its order, then the rest by name."""
    return (0, SEED_PAIRS.index(pair), pair) if pair in SEED_PAIRS else (1, 0, pair)
