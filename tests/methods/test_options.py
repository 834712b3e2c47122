"""Typed method options: every registered method declares what ``--method-opt`` may set; a typo or a wrong-typed
value ends in one line before any training; the resolved values are what config.json records, and they resolve
again to themselves (resume, sweeps). Also the method contract: CRD's bank and queue behind one interface."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from cli.conftest import FAST, only_child, read_run, run_cli
from distillers.config import MethodOptions, RunConfig
from distillers.errors import UserError
from distillers.methods import METHODS, Method, Option, Pair
from distillers.methods.crd import CRD, ContrastMemory, ContrastQueue, CRDQueue
from distillers.methods.dkd import DKD
from distillers.models import create_model

NAMES = METHODS.names()
OPTIONS = [(name, option) for name in NAMES for option in METHODS.get(name).options]
TYPED = [(name, option) for name, option in OPTIONS if option.type in (int, float, bool) and not option.choices]


def option_id(case: tuple[str, Option]) -> str:
    return f"{case[0]}-{case[1].name}"


# ---- declarations, parametrised over the registry ------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_every_method_declares_typed_options_with_help_and_source(name):
    cls = METHODS.get(name)
    assert isinstance(cls.options, tuple) and all(isinstance(option, Option) for option in cls.options)
    names = [option.name for option in cls.options]
    assert len(names) == len(set(names)), names
    for option in cls.options:
        assert option.type in (bool, int, float, str) and option.help and option.source
        assert option.default is None or type(option.default) is option.type, option
        assert option.choices is None or option.default in option.choices


@pytest.mark.parametrize("name", NAMES)
def test_defaults_resolve_and_a_resolved_dict_resolves_to_itself(name):
    cls = METHODS.get(name)
    resolved = cls.resolve_options({})
    assert resolved == {option.name: option.default for option in cls.options}
    # config.json stores it; a resume or a sweep hands it back (after a JSON round trip).
    assert cls.resolve_options(json.loads(json.dumps(resolved))) == resolved


@pytest.mark.parametrize("name", NAMES)
def test_an_unknown_key_names_the_method_and_its_valid_keys(name):
    cls = METHODS.get(name)
    with pytest.raises(UserError) as caught:
        cls.resolve_options({"no_such_option": "1"})
    message = str(caught.value)
    assert "\n" not in message and f"method {name!r} has no option 'no_such_option'" in message
    valid = message.split("; ", 1)[1]
    assert valid == (f"valid: {', '.join(o.name for o in cls.options)}" if cls.options else "it takes none")


@pytest.mark.parametrize("case", TYPED, ids=option_id)
def test_a_wrong_typed_value_is_one_line(case):
    name, option = case
    with pytest.raises(UserError, match=rf"^method '{name}': --method-opt {option.name}=abc is not ") as caught:
        METHODS.get(name).resolve_options({option.name: "abc"})
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("case", [case for case in OPTIONS if case[1].default is not None], ids=option_id)
def test_the_command_line_spelling_of_a_default_resolves_to_it(case):
    name, option = case
    value = METHODS.get(name).resolve_options({option.name: str(option.default)})[option.name]
    assert value == option.default and type(value) is option.type


def test_conversions_follow_the_declared_type():
    flag = Option("flag", bool, False, "h", "s")
    assert [flag.convert(text) for text in ("true", "False", "1", "0", " TRUE ")] == [True, False, True, False, True]
    assert flag.convert(True) is True and flag.convert(0) is False
    count = Option("count", int, 3, "h", "s")
    assert count.convert("7") == 7 and count.convert(7) == 7
    weight = Option("weight", float, 1.0, "h", "s")
    assert weight.convert("1e-3") == 1e-3 and weight.convert(2) == 2.0 and type(weight.convert(2)) is float
    for option, bad in ((flag, "yes"), (flag, 2), (count, "2.5"), (count, 2.5), (count, True), (weight, True),
                        (weight, "abc"), (weight, None)):
        with pytest.raises(ValueError):
            option.convert(bad)
    per_pair = Option("beta", float, None, "h", "s")
    assert per_pair.convert(None) is None and per_pair.convert("3") == 3.0


def test_choices_list_the_allowed_values():
    assert CRD.resolve_options({"crd_memory": "queue"}) == {"crd_memory": "queue"}
    with pytest.raises(UserError, match=r"^method 'crd': unknown --method-opt crd_memory=ring; choose bank \(default\) "
                                        r"or queue$"):
        CRD.resolve_options({"crd_memory": "ring"})


def test_typo_in_a_build_is_refused_too():
    """Methods read their options only through ``resolve_options``: a Pair built by hand (bench, tests) is checked."""
    pair = Pair(student=create_model("resnet8"), teacher=create_model("resnet20"), student_name="resnet8",
                teacher_name="resnet20", options=MethodOptions(extra={"bta": 8}))
    with pytest.raises(UserError, match="has no option 'bta'; valid: alpha, beta"):
        DKD.build(pair)


def test_a_resolved_config_builds_the_same_method_after_a_json_round_trip():
    """Per-pair defaults stay per pair: ``beta`` resolves to None and the pair's table decides at build time."""
    cfg = RunConfig(method="dkd", method_options=MethodOptions(extra={"warmup": "5"}))
    cfg.method_options.extra = DKD.resolve_options(cfg.method_options.extra)
    assert cfg.method_options.extra == {"alpha": 1.0, "beta": None, "warmup": 5, "T": None, "kd_weight": 1.0}
    again = RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    pair = Pair(student=create_model("vgg8"), teacher=create_model("vgg13"), student_name="vgg8",
                teacher_name="vgg13", options=again.method_options)
    method = DKD.build(pair)
    assert (method.alpha, method.beta, method.T, method.warmup) == (1.0, 6.0, 4.0, 5)  # DKD_BETA[vgg13, vgg8] = 6


def test_reading_a_config_does_not_import_the_methods():
    code = "import sys, distillers.config; print(sorted(m for m in sys.modules if m.startswith('distillers.methods')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---- the method contract --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_protocol_attributes_are_declared_on_the_base_class(name):
    cls = METHODS.get(name)
    for attribute in ("needs_strong_view", "needs_index", "needs_contrast", "init_stage", "preact", "teacher_preact",
                      "protocol", "options", "weights", "weights_note", "paper"):
        assert attribute in vars(Method), attribute
        assert type(getattr(cls, attribute)) is type(getattr(Method, attribute)) or getattr(Method, attribute) is None


def test_crd_memory_options_build_two_classes_with_class_level_protocols():
    def build(**extra):
        return CRD.build(Pair(student=create_model("resnet8"), teacher=create_model("resnet20"),
                              student_name="resnet8", teacher_name="resnet20", num_data=200,
                              options=MethodOptions(nce_k=16, feat_dim=8, extra=extra)))

    bank, queue = build(), build(crd_memory="queue")
    assert type(bank) is CRD and type(queue) is CRDQueue
    for method in (bank, queue):
        assert "protocol" not in vars(method) and method.protocol == type(method).protocol
    assert (bank.protocol, queue.protocol) == ("crd", "crd-queue")
    # The checkpoint keys of both memories are today's (old checkpoints still load).
    heads = {"embed_s.linear.weight", "embed_s.linear.bias", "embed_t.linear.weight", "embed_t.linear.bias"}
    assert set(bank.state_dict()) == heads | {"contrast.params", "contrast.memory_v1", "contrast.memory_v2"}
    assert set(queue.state_dict()) == heads | {"contrast.params", "contrast.queue_v1", "contrast.queue_v2",
                                               "contrast.queue_ptr"}


@pytest.mark.parametrize("memory_class", [ContrastMemory, ContrastQueue])
def test_bank_and_queue_share_one_interface(memory_class):
    torch.manual_seed(0)
    memory = memory_class(feat_dim=4, n_data=10, nce_k=3, nce_t=0.07, nce_m=0.5)
    v_s, v_t = (torch.nn.functional.normalize(torch.randn(3, 4), dim=1) for _ in range(2))
    index, contrast = torch.tensor([0, 1, 2]), torch.randint(0, 10, (3, 4))
    memory.check_inputs(index, contrast)
    memory.check_batch_size(3)
    out_s, out_t = memory(v_s, v_t, index, contrast)
    # K + 1 scores per sample either way: the positive, then the bank's K sampled rows or the queue's K entries.
    assert out_s.shape == out_t.shape == (3, 4) and bool((out_s > 0).all())
    assert memory.noise_size == (10 if memory_class is ContrastMemory else 3)
    assert memory_class.nce_k_problem(3, 10, 2) is None


# ---- the command line -----------------------------------------------------------------------------------------
def distill_argv(teacher, cifar, out, *extra: str) -> list:
    return ["distill", "--teacher", teacher.checkpoint, "--student", "resnet8", "--method", "dkd", "--epochs", "1",
            "--max-steps-per-epoch", "1", "--batch-size", "8", "--data-dir", cifar.root, "--out", out, *FAST, *extra]


@pytest.mark.parametrize("opt, words", [("bta=8", ["'bta'", "beta"]), ("beta=abc", ["beta=abc", "a number"])])
def test_a_bad_method_option_exits_2_with_one_line_before_training(capsys, tmp_path, cifar, teacher, opt, words):
    result = run_cli(capsys, *distill_argv(teacher, cifar, tmp_path / "runs", "--method-opt", opt))
    assert result.code == 2 and result.out == ""
    assert result.err.count("\n") == 1 and all(word in result.err for word in words), result.err
    assert not (tmp_path / "runs").exists()  # no run directory: nothing trained


def test_config_json_records_the_resolved_options(capsys, tmp_path, cifar, teacher):
    result = run_cli(capsys, *distill_argv(teacher, cifar, tmp_path, "--method-opt", "beta=3",
                                           "--method-opt", "warmup=2"))
    assert result.code == 0, result.err
    config, _, _ = read_run(only_child(tmp_path))
    assert config["method_options"]["extra"] == {"alpha": 1.0, "beta": 3.0, "warmup": 2, "T": None, "kd_weight": 1.0}


def test_a_sweep_of_several_methods_resolves_each_from_the_raw_options(capsys, tmp_path, cifar, teacher):
    """The sweep's runs share one base config: resolving dkd's options must not hand them to crd (one process)."""
    teachers = tmp_path / "teachers" / "resnet14_vanilla"
    teachers.mkdir(parents=True)
    shutil.copy(teacher.checkpoint, teachers / "ckpt_epoch_240.pth")
    out = tmp_path / "runs"
    result = run_cli(capsys, "sweep", "--pairs", "resnet14:resnet8", "--methods", "dkd", "crd", "--trials", "1",
                     "--teacher-dir", tmp_path / "teachers", "--out", out, "--", "--epochs", "1",
                     "--max-steps-per-epoch", "1", "--batch-size", "8", "--nce-k", "16", "--feat-dim", "8",
                     "--data-dir", cifar.root, *FAST)
    assert result.code == 0, result.err
    extras = {read_run(run)[0]["method"]: read_run(run)[0]["method_options"]["extra"] for run in out.iterdir()
              if run.is_dir()}
    assert extras == {"dkd": {"alpha": 1.0, "beta": None, "warmup": 20, "T": None, "kd_weight": 1.0},
                      "crd": {"crd_memory": "bank"}}


def test_list_methods_options_shows_every_method_and_its_defaults(capsys):
    result = run_cli(capsys, "list", "methods", "--options")
    assert result.code == 0, result.err
    headers = [line.split(":")[0] for line in result.out.splitlines() if not line.startswith(" ")]
    assert headers == NAMES
    rows = {line.split()[0]: line for line in result.out.splitlines() if line.startswith("  ")}
    assert "default 20 " in rows["warmup"] and "default 0.001 " in rows["feat_weight"]
    assert "bank|queue" in rows["crd_memory"] and "default bank " in rows["crd_memory"]
    assert "DKD_BETA" in result.out and "mdistiller configs/cifar100/dkd" in result.out
    plain = run_cli(capsys, "list", "methods")
    assert plain.code == 0 and "--method-opt" not in plain.out and plain.out.splitlines()[0].startswith("method")
    assert run_cli(capsys, "list", "models", "--options").code == 2
