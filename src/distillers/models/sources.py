"""Model sources besides the zoo: ``timm:<name>`` and ``torchvision:<name>`` (creation, weights, heads).

A name is ``<source>:<model>[,key=value...]``; the keys go to the library's constructor (``timm:vit_tiny_patch16_224,
patch_size=4``). A timm model with a fixed input size (ViTs) is built for the data's ``input_size`` and the name
records it (``img_size=32``), so a checkpoint's ``arch`` rebuilds the same network. Weights come from a file (a
timm or torchvision state dict, a ``.safetensors`` file or our checkpoint; pickles are read with
``torch.load(weights_only=True)``) or, with ``pretrained``, from the library's hub; offline, one line says how to
pass a file. The number of classes comes from the data: a head of another size is one line, or is replaced when
``reset_head`` is set (students only; a teacher's head must match the data's classes).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distillers.errors import UserError
from distillers.models.external import ExternalModel, wrap_timm, wrap_torchvision

SOURCES = ("timm", "torchvision")
OURS = "__distillers_checkpoint__"  # marks, inside ``read_state``, a state dict that came from our checkpoint


def is_external_name(name: str | None) -> bool:
    """Whether ``name`` names a model of an external source (``timm:...``, ``torchvision:...``)."""
    return isinstance(name, str) and name.split(":", 1)[0] in SOURCES and ":" in name


def parse(name: str) -> tuple[str, str, dict[str, Any]]:
    """``"timm:vit_tiny_patch16_224,patch_size=4"`` -> ``("timm", "vit_tiny_patch16_224", {"patch_size": 4})``."""
    source, _, rest = name.partition(":")
    model, *pairs = rest.split(",")
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise UserError(f"bad model option {pair!r} in {name}: write <source>:<model>,key=value")
        kwargs[key] = _typed(text)
    if not model:
        raise UserError(f"{name} names no model: write {source}:<model>, e.g. timm:resnet18")
    return source, model, kwargs


def _typed(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def model_name(name: str) -> str:
    """Check an external name exists in its library (one line listing how to search if not); return it."""
    source, model, _ = parse(name)
    if source == "timm":
        import timm

        if not timm.is_model(model):
            raise UserError(f"unknown timm model {model!r}; list them with python -c \"import timm; "
                            f"print(timm.list_models('*{model.split('.')[0][:6]}*'))\"")
    else:
        import torchvision

        if model not in torchvision.models.list_models():
            raise UserError(f"unknown torchvision model {model!r}; choose one of torchvision.models.list_models(), "
                            f"e.g. resnet18, mobilenet_v3_small")
    return name


def _with_input_size(name: str, input_size: int) -> tuple[str, dict[str, Any]]:
    """The constructor keywords, adding ``img_size`` for timm models with a fixed input size (recorded in the name)."""
    source, model, kwargs = parse(name)
    if source == "timm" and "img_size" not in kwargs:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(model)
        if cfg is not None and getattr(cfg, "fixed_input_size", False) and tuple(cfg.input_size[1:]) != \
                (input_size, input_size):
            kwargs["img_size"] = input_size
            name = f"{name},img_size={input_size}"
    return name, kwargs


def create(name: str, num_classes: int, input_size: int = 32, pretrained: bool = False) -> tuple[ExternalModel, str]:
    """Build ``name`` with ``num_classes`` outputs (hub weights when ``pretrained``); return it and its full name."""
    model_name(name)
    name, kwargs = _with_input_size(name, input_size)
    source, model, _ = parse(name)
    try:
        if source == "timm":
            import timm

            net = timm.create_model(model, pretrained=pretrained, num_classes=num_classes, **kwargs)
            return wrap_timm(net, name, input_size), name
        import torchvision

        weights = "DEFAULT" if pretrained else None
        net = torchvision.models.get_model(model, weights=weights, **({} if pretrained else
                                                                     {"num_classes": num_classes}), **kwargs)
    except TypeError as error:
        raise UserError(f"{name}: the library refused the model options ({' '.join(str(error).split())[:160]})") \
            from error
    except (OSError, RuntimeError, ValueError, AssertionError) as error:
        if not pretrained or not isinstance(error, (OSError, RuntimeError, ValueError)):
            raise UserError(f"{name}: the library could not build it ({type(error).__name__}: "
                            f"{' '.join(str(error).split())[:160]})") from error
        raise UserError(f"could not fetch the pretrained weights of {name} ({type(error).__name__}: "
                        f"{' '.join(str(error).split())[:120]}); offline, download them elsewhere and pass the file "
                        f"with --teacher-weights FILE (teacher) or --student-weights FILE (student)") from error
    wrapped = wrap_torchvision(net, name, input_size)
    if pretrained:
        _fit_torchvision_head(wrapped, num_classes)
    return wrapped, name


def _fit_torchvision_head(model: ExternalModel, num_classes: int) -> None:
    """Pretrained torchvision weights come with their 1000-class head; a new one is made for other class counts
    (the caller decides whether that is allowed: see ``check_head``)."""
    head = model.classifier()
    if head.out_features != num_classes:
        model.pretrained_classes = head.out_features
        parent, _, leaf = model.classifier_name.rpartition(".")
        owner = model.net.get_submodule(parent) if parent else model.net
        setattr(owner, leaf, nn.Linear(head.in_features, num_classes, bias=head.bias is not None))


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a file: safetensors, a bare state dict, ours or timm's training checkpoint (``model``,
    ``state_dict``, ``state_dict_ema``); ``module.`` prefixes of DDP are removed. Pickles load with weights_only."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as error:  # an untrusted file: any failure is one line
            raise UserError(f"{path} is not a readable safetensors file ({type(error).__name__})") from error
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        from distillers.engine.checkpoint import load_checkpoint

        load_checkpoint(path)  # raises the one-line reason (refused pickle, damaged file, not a checkpoint)
        raise
    if isinstance(blob, dict) and isinstance(blob.get("arch"), str) and isinstance(blob.get("model"), dict):
        blob["model"][OURS] = torch.zeros(())  # trained by distillers on the data's normalisation (popped below)
    for key in ("model", "state_dict", "state_dict_ema"):
        if isinstance(blob, dict) and isinstance(blob.get(key), dict):
            blob = blob[key]
            break
    if not isinstance(blob, dict) or not blob or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise UserError(f"{path} holds no state dict (expected tensors by name, or a dict with 'model' or "
                        f"'state_dict')")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in blob.items()}


def check_head(model: ExternalModel, state_classes: int | None, num_classes: int, source: str, role: str,
               reset_head: bool) -> bool:
    """Whether the head must be left out of the loaded weights; a mismatch without ``reset_head`` is one line."""
    if state_classes is None or state_classes == num_classes:
        return False
    if role == "teacher":
        raise UserError(f"{source} has a {state_classes}-class head but the data has {num_classes} classes; a "
                        f"teacher must be trained on these classes (fine-tune it first, or pass matching data)")
    if not reset_head:
        raise UserError(f"{source} has a {state_classes}-class head but the data has {num_classes} classes; pass "
                        f"--reset-head to start the student with a new {num_classes}-class head")
    return True


def load_into(model: ExternalModel, state: dict[str, torch.Tensor], num_classes: int, source: str, role: str,
              reset_head: bool = False) -> None:
    """Load ``state`` into ``model`` strictly, but for a head replaced by ``reset_head`` (students only)."""
    from distillers.engine.checkpoint import load_weights

    head_keys = model.classifier_keys()
    weight = state.get(next((k for k in head_keys if k.endswith("weight")), ""))
    state_classes = int(weight.shape[0]) if isinstance(weight, torch.Tensor) else None
    if check_head(model, state_classes, num_classes, source, role, reset_head):
        own = model.state_dict()
        state = {**{k: v for k, v in state.items() if k not in head_keys}, **{k: own[k] for k in head_keys}}
    load_weights(model, state, source, model.name)


def build(name: str, num_classes: int, role: str, weights_file: str | Path | None = None, pretrained: bool = False,
          reset_head: bool = False, input_size: int = 32) -> tuple[ExternalModel, str]:
    """An external model with its weights (file, hub or fresh); ``role`` is ``teacher`` or ``student``."""
    if weights_file is not None and pretrained:
        raise UserError(f"{name}: give weights either as a file or with --pretrained, not both")
    model, full_name = create(name, num_classes, input_size, pretrained)
    if pretrained:
        check_head(model, getattr(model, "pretrained_classes", _timm_pretrained_classes(name)), num_classes,
                   f"the pretrained weights of {name}", role, reset_head)
    if weights_file is not None:
        state = read_state(weights_file)
        model.trained_here = state.pop(OURS, None) is not None
        load_into(model, state, num_classes, str(weights_file), role, reset_head)
    return model, full_name


def _timm_pretrained_classes(name: str) -> int | None:
    source, model, _ = parse(name)
    if source != "timm":
        return None
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(model)
    return getattr(cfg, "num_classes", None) if cfg is not None else None


def load_teacher(path: str | Path | None, arch: str, num_classes: int, weights_file: str | Path | None = None,
                 pretrained: bool = False, input_size: int = 32) -> tuple[ExternalModel, str]:
    """The teacher ``arch`` with the weights of ``weights_file`` (or ``path``), or the hub's with ``pretrained``."""
    if weights_file is not None and path is not None and str(weights_file) != str(path):
        raise UserError(f"the teacher has two weights files ({path} and {weights_file}); pass one")
    file = weights_file if weights_file is not None else path
    if file is None and not pretrained:
        raise UserError(f"the teacher {arch} needs weights: pass --teacher FILE (a timm/torchvision state dict, "
                        f"safetensors or our checkpoint) or --pretrained to download the published ones")
    return build(arch, num_classes, "teacher", file, pretrained, input_size=input_size)


def create_student(name: str, num_classes: int, weights_file: str | Path | None = None, pretrained: bool = False,
                   reset_head: bool = False, input_size: int = 32) -> tuple[ExternalModel, str]:
    """The student ``name``: fresh, from a file, or from the hub; ``reset_head`` replaces a head of another size."""
    return build(name, num_classes, "student", weights_file, pretrained, reset_head, input_size)


def check_method(method_cls: type, teacher: nn.Module, student: nn.Module, teacher_name: str,
                 student_name: str) -> None:
    """Refuse, before training, a method that needs pre-activation features a model declares it cannot give."""
    student_pre = method_cls.preact
    teacher_pre = method_cls.teacher_preact
    teacher_pre = student_pre if teacher_pre is None else teacher_pre
    for role, model, name, needed in (("teacher", teacher, teacher_name, teacher_pre),
                                      ("student", student, student_name, student_pre)):
        if needed and not getattr(model, "preact_available", True):
            raise UserError(f"method {method_cls.name!r} does not support {teacher_name} -> {student_name}: it "
                            f"needs the {role}'s pre-activation stage outputs, which {name} does not give "
                            f"(its library exposes post-activation features only); pick another method")


def external_from_state(name: str, state: dict[str, torch.Tensor], num_classes: int, source: str) -> ExternalModel:
    """Rebuild the external model a checkpoint records as ``arch`` and load its weights (a teacher's rules: the
    head must match the data's classes)."""
    model, _ = create(name, num_classes)
    load_into(model, state, num_classes, source, "teacher")
    model.trained_here = True  # only our checkpoints record an external arch
    return model


def external_teacher(cfg: Any, info: Any) -> tuple[ExternalModel, str]:
    """The run's external teacher: ``--teacher-arch`` with ``--teacher``/``--teacher-weights`` or ``--pretrained``
    (``cfg`` a RunConfig, ``info`` the data's DataInfo)."""
    return load_teacher(cfg.teacher_path, cfg.teacher, info.num_classes, cfg.teacher_weights,
                        cfg.pretrained in ("teacher", "both"), info.input_size)


def external_student(cfg: Any, info: Any) -> tuple[ExternalModel, str]:
    """The run's external student (``--student-weights``, ``--pretrained student|both``, ``--reset-head``)."""
    return create_student(cfg.student, info.num_classes, cfg.student_weights, cfg.pretrained in ("student", "both"),
                          cfg.reset_head, info.input_size)


def own_preprocessing(teacher: nn.Module, data_mean: tuple[float, ...], data_std: tuple[float, ...],
                      size: int | None = None) -> nn.Module:
    """An external teacher with foreign weights (the hub's, or a file distillers did not write) fed its own
    normalisation (its pretrained config's, as timm's distillation does) and, with ``size``, its own resolution,
    from the batch normalised for the data. Other teachers, and one whose statistics equal the data's at the same
    size, are returned as they are."""
    from distillers.models.external import Preprocessed

    if not isinstance(teacher, ExternalModel) or teacher.trained_here:
        return teacher  # a teacher we trained saw the data's normalisation
    same = tuple(teacher.mean) == tuple(data_mean) and tuple(teacher.std) == tuple(data_std)
    if same and size is None:
        return teacher
    return Preprocessed(teacher, data_mean, data_std, size)


def teacher_spec(spec: str) -> tuple[str | None, str]:
    """``--teacher FILE`` or ``--teacher ARCH=FILE`` (ARCH a zoo, timm: or torchvision: name) -> ``(arch, file)``."""
    from distillers.models import MODELS

    arch, sep, path = spec.partition("=")
    if sep and (is_external_name(arch) or arch in MODELS):
        return arch, path
    return None, spec


def teacher_weights(weighting: str, count: int) -> list[float] | None:
    """``--teacher-weighting``: ``mean`` (None) or one non-negative weight per teacher, comma-separated."""
    if weighting == "mean":
        return None
    try:
        weights = [float(part) for part in weighting.split(",")]
    except ValueError:
        weights = []
    if len(weights) != count or min(weights) < 0 or sum(weights) <= 0:
        raise UserError(f"--teacher-weighting {weighting!r}: give 'mean' or {count} non-negative comma-separated "
                        f"weights (one per --teacher), not all 0")
    return weights


def several_teachers(cfg: Any, info: Any, method_cls: type, first: nn.Module, first_name: str,
                     load: Any) -> tuple[list[nn.Module], list[str], list[float] | None]:
    """The teachers of ``--teacher`` given more than once (``load`` reads a zoo checkpoint: ``load_model``), for the
    methods that read logits only; a feature method is refused in one line."""
    count = 1 + len(cfg.extra_teachers)
    if method_cls.teacher_features:
        raise UserError(f"method {method_cls.name!r} reads the teacher's features, so it takes one teacher (got "
                        f"{count}); several teachers work with the methods that read logits only (kd, dkd, dist, "
                        f"kd_ls, dkd_ls, mlkd, mlkd_ls)")
    weights = teacher_weights(cfg.teacher_weighting, count)
    teachers, names = [first], [first_name]
    for spec in cfg.extra_teachers:
        arch, path = teacher_spec(spec)
        if is_external_name(arch):
            model, name = load_teacher(path, arch, info.num_classes, input_size=info.input_size)
        else:
            model, name = load(path, arch, info.num_classes, "--teacher ARCH=FILE")[:2]
        teachers.append(own_preprocessing(model, info.mean, info.std))
        names.append(name)
    return teachers, names, weights


def zoo_teacher_file(cfg: Any) -> str:
    """The checkpoint of a zoo teacher (``--teacher`` or ``--teacher-weights``); the hub serves external models only."""
    if cfg.teacher_path and cfg.teacher_weights and cfg.teacher_path != cfg.teacher_weights:
        raise UserError(f"the teacher has two weights files ({cfg.teacher_path} and {cfg.teacher_weights}); pass one")
    path = cfg.teacher_path or cfg.teacher_weights
    if path is None:
        raise UserError(f"--pretrained downloads timm:/torchvision: models only; the teacher "
                        f"{cfg.teacher or '(architecture not given)'} needs --teacher FILE")
    return path
