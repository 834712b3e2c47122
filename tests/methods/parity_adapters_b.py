"""Parity adapters for ab, ft, fsp, crd, icd and rrd.

See the docstring of ``test_reference_parity.py`` for the adapter interface. The fixtures store shapes with a
batch dimension; our modules take ``(C, H, W)`` shapes or channel counts, so the adapters slice them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from distillers.methods import Step
from distillers.methods.ab import AB
from distillers.methods.crd import CRD
from distillers.methods.fsp import FSP
from distillers.methods.ft import FT
from distillers.methods.icd import ICD
from distillers.methods.rrd import RRD


def _main_stage_zero(method) -> tuple[None, object]:
    """AB's and FSP's main stage: the method's own forward, which must give the reference's constant 0."""

    def run(inputs: dict) -> Tensor:
        logits = torch.zeros(2, 3)
        step = Step(feats_s=[], feats_t=[], logits_s=logits, logits_t=logits, target=torch.zeros(2).long())
        return method(step)

    return None, run


def ab(case: dict):
    if case["stage"] == "main":
        return _main_stage_zero(AB([], []))
    hparams = case["hparams"]
    method = AB([s[1:] for s in hparams["s_shapes"]], [s[1:] for s in hparams["t_shapes"]], hparams["margin"])
    assert len(method.connector.connectors) == hparams["feat_num"]
    return method, lambda inputs: method.loss(inputs["g_s"], inputs["g_t"])


def ft(case: dict):
    hparams = case["hparams"]
    t_channels = hparams["t_shape"][1]
    if case["stage"] == "init":
        method = FT(t_channels, t_channels, hparams["k"])  # the student side is unused in the init stage
        trainable = [p for module in method.init_modules(None) for p in module.parameters()]
        options = {"rename": {"paraphraser.": ""}, "trainable": trainable}
        return method.paraphraser, lambda inputs: method.reconstruction_loss(inputs["feat_t"]), options
    method = FT(hparams["s_shape"][1], t_channels, hparams["k"], hparams["p1"], hparams["p2"])
    method.end_init_stage()
    return method, lambda inputs: method.loss(inputs["feat_s"], inputs["feat_t"])


def fsp(case: dict):
    method = FSP()
    if case["stage"] == "main":
        return _main_stage_zero(method)
    return None, lambda inputs: method.loss(inputs["g_s"], inputs["g_t"])


def crd(case: dict):
    hparams = case["hparams"]
    method = CRD(hparams["s_dim"], hparams["t_dim"], hparams["feat_dim"], hparams["n_data"], hparams["nce_k"],
                 hparams["nce_t"], hparams["nce_m"])

    def run(inputs: dict) -> Tensor:
        return method.loss(inputs["f_s"], inputs["f_t"], inputs["idx"], inputs["contrast_idx"])

    return method, run, {"rename": {"crd.": ""}}


def icd(case: dict):
    hparams = case["hparams"]
    method = ICD(hparams["s_dim"], hparams["t_dim"], hparams["feat_dim"], hparams["max_tau"], hparams["icd_alpha"],
                 hparams["init_tau"], hparams["init_b"])
    return method, lambda inputs: method.loss(inputs["f_s"], inputs["f_t"]), {"rename": {"icd.": ""}}


def rrd(case: dict):
    hparams = case["hparams"]
    method = RRD(hparams["s_dim"], hparams["t_dim"], hparams["feat_dim"], hparams["nce_k"], hparams["nce_t_s"],
                 hparams["nce_t_t"])
    return method, lambda inputs: method.loss(inputs["f_s"], inputs["f_t"]), {"rename": {"rrd.": ""}}


ADAPTERS = {
    "ab": ab,
    "ft": ft,
    "fsp": fsp,
    "crd": crd,
    "icd": icd,
    "rrd": rrd,
}
