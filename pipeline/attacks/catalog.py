"""The seven attacks of the paper's Table I, one spec each, in its column order.

Parameter defaults are Table I's; values the paper leaves out are marked "not in the paper".
Field names are the keyword arguments of each attack's class, so the spec passes them whole.
Adding an attack is one spec here (a parameter dataclass and its class) plus its test.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.attacks.spec import AttackLimits, AttackSpec
from pipeline.errors import PipelineError
from pipeline.schema import bounded


@dataclass
class FGSM:
    eps: float = bounded(0.008, lo=0.0)


@dataclass
class PGD:
    eps: float = bounded(0.01, lo=0.0)
    alpha: float = bounded(0.02, lo=0.0)
    steps: int = bounded(40, lo=1)
    random_start: bool = True  # not in the paper: torchattacks' default (Madry et al.)


@dataclass
class SSAH:
    """Table I's "α = 0.01" read as the SSAH authors' code reads its constructor argument ``alpha``:
    the weight of the similarity cost; the other values are their code's CIFAR defaults."""

    steps: int = bounded(150, lo=1)
    alpha: float = bounded(0.01, lo=0.0)  # Table I; weight of the similarity cost (authors' code)
    lr: float = bounded(1e-3, lo=0.0)  # authors' code, CIFAR: Adam's step size
    m: float = bounded(0.2, lo=0.0)  # SSAH paper: similarity margin
    lambda_lf: float = bounded(0.1, lo=0.0)  # SSAH paper: weight of the low-frequency constraint


@dataclass
class DeepFool:
    steps: int = bounded(20, lo=1)
    overshoot: float = bounded(0.02, lo=0.0)  # not in the paper: DeepFool's original value


@dataclass
class BIM:
    eps: float = bounded(0.03, lo=0.0)
    alpha: float = bounded(0.01, lo=0.0)
    steps: int = bounded(10, lo=1)


@dataclass
class CW:
    c: float = bounded(2.0, lo=0.0)
    kappa: float = bounded(2.0, lo=0.0)
    steps: int = bounded(500, lo=1)
    lr: float = bounded(0.01, lo=0.0)  # norm: L2 (not in the paper; the only norm torchattacks' CW has)


@dataclass
class JSMA:
    theta: float = bounded(1.0, lo=0.0)  # not in the paper: Papernot et al.'s value (pixels pushed to the maximum)
    gamma: float = bounded(0.02, lo=0.0)
    # not in the paper: JSMA is targeted; untargeted use aims at the victim's runner-up class
    # ("next" = (label + 1) mod classes, torchattacks' rule generalised beyond ten classes)
    target: str = bounded("runner_up", choices=("runner_up", "next"))


ATTACKS: dict[str, AttackSpec] = {
    spec.name: spec
    for spec in (
        AttackSpec("fgsm", "FGSM", FGSM, "torchattacks:FGSM"),
        AttackSpec("pgd", "PGD", PGD, "torchattacks:PGD"),
        AttackSpec("ssah", "SSAH", SSAH, "pipeline.attacks.ssah:SSAH"),
        # the per-image attacks get finer shards (more array tasks on a cluster), never fewer steps
        AttackSpec(
            "deepfool", "DeepFool", DeepFool, "pipeline.attacks.custom:BatchedDeepFool", AttackLimits(shard_size=250)
        ),
        AttackSpec("bim", "BIM", BIM, "torchattacks:BIM"),
        AttackSpec("cw", "CW", CW, "torchattacks:CW", AttackLimits(shard_size=500)),
        AttackSpec("jsma", "JSMA", JSMA, "pipeline.attacks.custom:TargetedJSMA", AttackLimits(shard_size=100)),
    )
}


def build_attack(name: str, model, params):
    """Attack ``name`` on ``model`` with ``params`` (its parameter dataclass or a dict of its fields)."""
    if name not in ATTACKS:
        raise PipelineError(f"unknown attack {name!r} (known: {', '.join(ATTACKS)})")
    return ATTACKS[name].build(model, params)
