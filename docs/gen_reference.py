"""Write the method, model and dataset reference pages from the registries, at build time (mkdocs-gen-files).

Nothing on these pages is typed by hand: a method registered tomorrow (in the package, or in a plugin named by
``DISTILLERS_PLUGINS``) gets its page with its options, weights, published numbers and refused pairs.
Pages: ``reference/methods.md`` (index) and ``reference/methods/<name>.md``, ``reference/models.md``,
``reference/datasets.md``.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Iterable
from importlib import resources
from typing import Any

import mkdocs_gen_files
import torch

from distillers.config import MethodOptions
from distillers.data import DATASETS
from distillers.errors import UserError
from distillers.methods import METHODS, Method, Pair
from distillers.models import MODELS, create_model, default_lr
from distillers.plugins import load_plugins
from distillers.reporting.names import method_row
from distillers.seed_grid import SEED_PAIRS


def table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    """A markdown table; ``|`` inside cells is escaped."""
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(str(cell).replace("|", "\\|").replace("\n", " ") for cell in row) + " |")
    return "\n".join(lines) + "\n"


def display_name(cls: type[Method]) -> str:
    """The row name reports give the method."""
    return method_row(cls)[0]


def write(path: str, text: str) -> None:
    with mkdocs_gen_files.open(path, "w") as handle:
        handle.write(text)


# ---------------------------------------------------------------------------------------------------- methods
def published_numbers(label: str) -> list[tuple[str, str, str, str]]:
    """``(row, teacher -> student, top-1, source)`` of every published number whose row is ``label`` or
    ``label+KD`` (published.json: the seed README's tables and the later methods' papers)."""
    data = json.loads(resources.files("distillers").joinpath("published.json").read_text(encoding="utf-8"))
    found = []
    rows = {label, f"{label}+KD"}
    seed = data["seed"]
    for part in seed["tables"]:
        for row in part["rows"]:
            if row["method"] in rows:
                for (teacher, student), top1 in zip(part["pairs"], row["top1"]):
                    value = "N/A" if top1 is None else f"{top1:.2f}"
                    found.append((row["method"], f"{teacher} → {student}", value, "seed README"))
    for entry in data.get("modern", []):
        if entry["method"] in rows or entry["method"] in {f"{label}+LS"}:
            found.append((entry["method"], f"{entry['teacher']} → {entry['student']}", f"{entry['top1']:.2f}",
                          f"{entry['source']} (protocol {entry['protocol']})"))
    return found


def published_table(numbers: list[tuple[str, str, str, str]]) -> str:
    """One row per teacher -> student pair, one column per published row label (``CRD``, ``CRD+KD``)."""
    if not numbers:
        return "None recorded in `published.json`.\n"
    labels = list(dict.fromkeys(label for label, _, _, _ in numbers))
    pairs = list(dict.fromkeys(pair for _, pair, _, _ in numbers))
    cells = {(label, pair): value for label, pair, value, _ in numbers}
    sources = sorted({source for _, _, _, source in numbers})
    rows = [(pair, *(cells.get((label, pair), "—") for label in labels)) for pair in pairs]
    return table(["teacher → student", *labels], rows) + "\nSource: " + "; ".join(sources) + ".\n"


class PairBuilder:
    """Builds the seed's teacher -> student pairs once, to ask each method whether it serves them.

    Models and methods are built on the meta device (shapes without memory or random initialisation: twice as
    fast); a build that needs real tensors is repeated on the CPU.
    """

    def __init__(self) -> None:
        self.models: dict[tuple[str, str], torch.nn.Module] = {}

    def pair(self, teacher: str, student: str, device: str) -> Pair:
        for name in (teacher, student):
            if (name, device) not in self.models:
                with torch.device(device):
                    self.models[name, device] = create_model(name, num_classes=100)
        return Pair(self.models[student, device], self.models[teacher, device], student, teacher, num_classes=100,
                    num_data=50000, input_size=32, options=MethodOptions())

    def refusal(self, cls: type[Method], teacher: str, student: str) -> str | None:
        """The one-line error the method raises for this pair with default options, or None when it builds."""
        for device in ("meta", "cpu"):
            try:
                with torch.device(device):
                    cls.build(self.pair(teacher, student, device))
                return None
            except UserError as error:
                return str(error)
            except (RuntimeError, NotImplementedError):
                if device == "cpu":
                    raise
        return None

    def refused(self, cls: type[Method]) -> list[tuple[str, str]]:
        """``(teacher -> student, the one-line reason)`` for every seed pair the method refuses, default options."""
        refusals = [(f"{teacher} → {student}", self.refusal(cls, teacher, student)) for teacher, student in SEED_PAIRS]
        return [(pair, why) for pair, why in refusals if why is not None]


def consumes(cls: type[Method]) -> list[str]:
    """What the method asks of the engine and the data, from its declared class attributes."""
    facts = []
    if cls.preact:
        facts.append("pre-activation stage outputs of both models" if cls.teacher_preact in (None, True)
                     else "pre-activation stage outputs of the student")
    if cls.needs_contrast:
        facts.append("CRD's contrastive indices from the loader (`contrast_index`)")
    elif cls.needs_index:
        facts.append("the sample index of every image")
    if cls.init_stage:
        facts.append("an initialisation stage before distillation (`--init-epochs`)")
    if getattr(cls, "needs_strong_view", False):
        facts.append("a second, strongly augmented view (`--augment strong`)")
    if not getattr(cls, "teacher_features", True):
        facts.append("the teacher's logits only: takes several teachers (`--teacher` repeated)")
    if cls.protocol != "crd":
        facts.append(f"published numbers under protocol `{cls.protocol}` (reports keep them apart)")
    return facts or ["logits and features only"]


def method_page(name: str, cls: type[Method], pairs: PairBuilder) -> str:
    label = display_name(cls)
    aliases = ", ".join(f"`{alias}`" for alias in METHODS.aliases_of(name)) or "none"
    w = cls.weights
    header = (f"# {label} (`{name}`)\n\n**Paper:** {cls.paper or '—'}  \n**Aliases:** {aliases}  \n"
              f"**Class:** `{cls.__module__}.{cls.__qualname__}`\n")
    weights = f"`-r {w.gamma:g} -a {w.alpha:g} -b {w.beta:g}` when the command gives none"
    weights += f" ({cls.weights_note}).\n" if cls.weights_note else ".\n"
    parts = [header, inspect.getdoc(cls) or "", "\n## Default weights\n", weights, "\n## What it needs\n",
             "".join(f"- {fact}\n" for fact in consumes(cls)), "\n## Options (`--method-opt KEY=VALUE`)\n"]
    options = getattr(cls, "options", ())
    if options:
        parts.append(table(["option", "type", "default", "choices", "what", "default from"],
                           ((f"`{o.name}`", o.type.__name__, f"`{o.shown_default()}`",
                             ", ".join(map(str, o.choices)) if o.choices else "—", o.help, o.source)
                            for o in options)))
    else:
        parts.append("None of its own; the shared flags (`--kd-T`, `--feat-dim`, `--nce-k`, ...) apply where the "
                     "method reads them (`distillers distill --help`).\n")
    parts.append("\n## Published CIFAR-100 top-1\n")
    parts.append(published_table(published_numbers(label)))
    refused = pairs.refused(cls)
    parts.append("\n## Seed pairs it refuses (default options)\n")
    parts.append(table(["teacher → student", "why (the error a run would end with)"], refused) if refused
                 else f"None: it builds for all {len(SEED_PAIRS)} pairs of the seed's tables.\n")
    return "\n".join(parts)


def methods_pages() -> None:
    pairs = PairBuilder()
    rows = []
    for name in sorted(METHODS.names(), key=lambda n: (method_row(METHODS.get(n))[1], n)):
        cls = METHODS.get(name)
        write(f"reference/methods/{name}.md", method_page(name, cls, pairs))
        w = cls.weights
        options = ", ".join(f"`{o.name}`" for o in getattr(cls, "options", ())) or "—"
        rows.append((f"[{display_name(cls)}](methods/{name}.md)", f"`{name}`",
                     ", ".join(METHODS.aliases_of(name)) or "—", f"{w.gamma:g} / {w.alpha:g} / {w.beta:g}", options,
                     cls.paper))
    intro = ("# Methods\n\nEvery method registered when the docs were built (this page is generated from the "
             "registry by `docs/gen_reference.py`). Weights are the defaults of `-r / -a / -b`. Each page lists "
             "the method's typed options, what it needs, published numbers and the seed pairs it refuses.\n\n"
             "Shared hyper-parameters are flags of `distillers distill`, with the seed's defaults:\n\n")
    shared = table(["flag", "default"], ((f"`--{f.name.replace('_', '-')}`", f"`{f.default}`")
                                         for f in dataclasses.fields(MethodOptions) if f.name != "extra"))
    write("reference/methods.md", intro + shared + "\n" + table(
        ["method", "name", "aliases", "r / a / b", "options", "paper"], rows))


# ----------------------------------------------------------------------------------------------------- models
def feature_text(model: torch.nn.Module) -> str:
    """``channels/reduction`` of each declared feature, ``emb`` for the pooled embedding."""
    cells = []
    for info in model.feature_info:
        cells.append(f"{info.channels}/emb" if info.reduction is None else f"{info.channels}/{info.reduction}")
    return " ".join(cells)


def model_row(name: str) -> tuple:
    factory = MODELS.get(name)
    try:
        with torch.device("meta"):  # shapes only: no memory, no random initialisation
            model = create_model(name, num_classes=100)
    except (RuntimeError, NotImplementedError):  # a factory that needs real tensors (a probe forward)
        model = create_model(name, num_classes=100)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    aliases = ", ".join(MODELS.aliases_of(name)) or "—"
    module = getattr(factory, "__module__", "").rsplit(".", 1)[-1]
    return f"`{name}`", aliases, module, f"{params:.2f}", feature_text(model), default_lr(name)


def models_page() -> None:
    intro = ("# Models\n\nEvery model registered when the docs were built (generated from the registry by "
             "`docs/gen_reference.py`), built with 100 classes. **Features** lists what the model declares in "
             "`feature_info`, one entry per item of `model(x, is_feat=True)[0]`: `channels/reduction` (the "
             "spatial stride against the input), `emb` for the pooled embedding. Methods size their modules from "
             "these; see [Adding a model](../adding-a-model.md). **lr** is the seed's learning rate for it as a "
             "student or teacher.\n\n")
    rows = [model_row(name) for name in MODELS.names()]
    write("reference/models.md", intro + table(["model", "aliases", "file", "params (M)", "features", "lr"], rows))


# --------------------------------------------------------------------------------------------------- datasets
def datasets_page() -> None:
    intro = ("# Datasets\n\nEvery dataset registered when the docs were built (generated from the registry by "
             "`docs/gen_reference.py`). **Files** is what must exist under `--data-dir`; with **download** "
             "available, `--download` fetches and verifies it. See [Adding a dataset](../adding-a-dataset.md).\n\n")
    rows = []
    for name in DATASETS.names():
        spec = DATASETS.get(name)
        stats = ", ".join(f"{m:g}±{s:g}" for m, s in zip(spec.mean, spec.std))
        layout = f"`{spec.layout}`" if spec.layout else "—"
        rows.append((f"`{name}`", spec.title, spec.num_classes or "from the data", spec.input_size, layout,
                     "yes" if spec.download else "no", spec.url or "—", stats))
    write("reference/datasets.md", intro + table(
        ["name", "title", "classes", "input", "files", "download", "source", "mean ± std per channel"], rows))


load_plugins()  # a lab's own methods (DISTILLERS_PLUGINS or entry points) get their pages too
methods_pages()
models_page()
datasets_page()
