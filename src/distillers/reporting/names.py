"""What tables call things: method rows (display name and order, from the method registry) and datasets.

A method class declares ``display_name`` and ``table_rank`` (``distillers.methods.base.Method``); a method that
declares neither gets its registry name upper-cased and a row after the seed's and the later methods' rows, so a
new method needs no edit here. Both are read from the class itself, not inherited, so a method that subclasses
another (DKD+LS of DKD) never borrows its parent's row.
"""

from __future__ import annotations

from distillers.seed_grid import SEED_METHODS

DATASET_NAMES = {"cifar100": "CIFAR-100", "cifar10": "CIFAR-10", "stl10": "STL-10", "tiny_imagenet": "Tiny ImageNet"}
KD_SUFFIX = "+KD"
LS_SUFFIX = "+LS"


def method_row(cls: type) -> tuple[str, int]:
    """``(display name, table rank)`` that a method class declares itself, with the defaults when it does not."""
    from distillers.methods import Method  # the methods package imports torch: only when a table names a method

    own = vars(cls)
    return own.get("display_name") or cls.name.upper(), own.get("table_rank", Method.table_rank)


def _registered_rows() -> dict[str, tuple[str, int, bool]]:
    """Registry name -> (display name, table rank, whether its own recipe already weighs KL(T), i.e. alpha > 0).

    Read on every call, not cached, so a method registered later (a plugin, a test) gets its row too.
    """
    from distillers.methods import METHODS

    rows = {}
    for name in METHODS.names():
        cls = METHODS.get(name)
        rows[name] = (*method_row(cls), cls.weights.alpha > 0)
    return rows


def _registry_name(method: str) -> str | None:
    from distillers.methods import METHODS

    key = method.strip().lower().replace("-", "_")
    return METHODS.canonical(key) if key in METHODS else None


def display_name(method: str, alpha: float = 0.0, logit_stand: bool = False) -> str:
    """Row name of a run's method: ``crd`` -> ``CRD``; ``+LS`` with logit standardisation; ``+KD`` when alpha > 0.

    ``+KD`` marks KL(T) added to a method whose own recipe has none (so KD itself stays ``KD``); a method the
    registry does not know keeps the name it was given.
    """
    name = _registry_name(method)
    label, _, has_kd = _registered_rows()[name] if name else (method, 0, False)
    if logit_stand and not label.endswith(LS_SUFFIX):
        label += LS_SUFFIX
    if alpha > 0 and not has_kd:
        label += KD_SUFFIX
    return label


def seed_rows() -> tuple[str, ...]:
    """The seed README's row labels in its order (``crd+kd`` -> ``CRD+KD``)."""
    labels = []
    for entry in SEED_METHODS:
        method, plus, _ = entry.partition("+")
        labels.append(display_name(method, alpha=1.0 if plus else 0.0))
    return tuple(labels)


def _rank_of_label() -> dict[str, int]:
    ranks: dict[str, int] = {}
    for label, rank, _ in _registered_rows().values():
        ranks[label] = min(rank, ranks.get(label, rank))
    return ranks


def method_rank(label: str) -> tuple:
    """Sort key of a row label: the seed's rows in its order, then registered methods by ``table_rank`` (each
    followed by its ``+KD`` variant), then anything else by name."""
    rows = seed_rows()
    if label in rows:
        return (0, rows.index(label), "")
    base = label[: -len(KD_SUFFIX)] if label.endswith(KD_SUFFIX) else label
    ranks = _rank_of_label()
    if base in ranks:
        return (1, ranks[base], label)
    return (2, 0, label)
