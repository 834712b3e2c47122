"""Parity adapters for kd, objective_kd, fitnet, at, sp, cc, vid, rkd, pkt, nst and kdsvd.

See the docstring of ``test_reference_parity.py`` for the adapter interface.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from distillers.methods import METHODS, Step, kd_loss
from distillers.methods.at import AT
from distillers.methods.cc import CC
from distillers.methods.fitnet import FitNet
from distillers.methods.kdsvd import KDSVD
from distillers.methods.nst import NST
from distillers.methods.pkt import PKT
from distillers.methods.rkd import RKD
from distillers.methods.sp import SP
from distillers.methods.vid import VID


def _with_terms(loss_fn: Callable[[list[Tensor], list[Tensor]], list[Tensor]]):
    """A ``run`` for losses computed per stage pair: the reference sums the terms with Python's ``sum``."""

    def run(inputs: dict) -> tuple[Tensor, list[Tensor]]:
        terms = loss_fn(inputs["g_s"], inputs["g_t"])
        return sum(terms), terms

    return run


def kd(case: dict):
    T = case["hparams"]["T"]
    return None, lambda inputs: kd_loss(inputs["logit_s"], inputs["logit_t"], T)


def objective_kd(case: dict):
    hparams = case["hparams"]
    method = METHODS.get("kd")()

    def run(inputs: dict) -> tuple[Tensor, list[Tensor]]:
        logits_s, logits_t, target = inputs["logit_s"], inputs["logit_t"], inputs["target"]
        step = Step(feats_s=[], feats_t=[], logits_s=logits_s, logits_t=logits_t, target=target)
        terms = [F.cross_entropy(logits_s, target), kd_loss(logits_s, logits_t, hparams["T"]), method(step)]
        loss = hparams["gamma"] * terms[0] + hparams["alpha"] * terms[1] + hparams["beta"] * terms[2]
        return loss, terms

    return None, run


def fitnet(case: dict):
    hparams = case["hparams"]
    method = FitNet(hparams["s_shape"], hparams["t_shape"], hparams["hint_layer"])
    return method, lambda inputs: method.loss(inputs["feat_s"], inputs["feat_t"])


def at(case: dict):
    return None, _with_terms(AT(p=case["hparams"]["p"]).loss)


def sp(case: dict):
    return None, _with_terms(SP().loss)


def cc(case: dict):
    hparams = case["hparams"]
    method = CC(hparams["s_dim"], hparams["t_dim"], hparams["feat_dim"])
    return method, lambda inputs: method.loss(inputs["f_s"], inputs["f_t"])


def vid(case: dict):
    hparams = case["hparams"]
    method = VID(hparams["s_channels"], hparams["t_channels"], hparams["init_pred_var"], hparams["eps"])
    return method, _with_terms(method.loss), {"rename": {"vid.": "stages."}}


def rkd(case: dict):
    hparams = case["hparams"]
    method = RKD(w_d=hparams["w_d"], w_a=hparams["w_a"])

    def run(inputs: dict) -> tuple[Tensor, list[Tensor]]:
        loss_d, loss_a = method.loss(inputs["f_s"], inputs["f_t"])
        return method.w_d * loss_d + method.w_a * loss_a, [loss_d, loss_a]

    return None, run


def pkt(case: dict):
    method = PKT(eps=case["hparams"]["eps"])
    return None, lambda inputs: method.loss(inputs["f_s"], inputs["f_t"])


def nst(case: dict):
    return None, _with_terms(NST().loss)


def kdsvd(case: dict):
    return None, _with_terms(KDSVD(k=case["hparams"]["k"]).loss)


ADAPTERS = {
    "kd": kd,
    "objective_kd": objective_kd,
    "fitnet": fitnet,
    "at": at,
    "sp": sp,
    "cc": cc,
    "vid": vid,
    "rkd": rkd,
    "pkt": pkt,
    "nst": nst,
    "kdsvd": kdsvd,
}
