"""Parameters of each attack (torch-free, so configs validate without importing torch).

Defaults are the paper's Table I; values the paper leaves out are marked "not in the paper".
"""

from __future__ import annotations

from dataclasses import dataclass

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
class DeepFool:
    steps: int = bounded(20, lo=1)
    overshoot: float = bounded(0.02, lo=0.0)  # not in the paper: DeepFool's original value


@dataclass
class JSMA:
    theta: float = bounded(1.0, lo=0.0)  # not in the paper: Papernot et al.'s value (pixels pushed to the maximum)
    gamma: float = bounded(0.02, lo=0.0)
    # not in the paper: JSMA is targeted; untargeted use aims at the victim's runner-up class
    # ("next" = (label + 1) mod classes, torchattacks' rule generalised beyond ten classes)
    target: str = bounded("runner_up", choices=("runner_up", "next"))


@dataclass
class SSAH:
    steps: int = bounded(150, lo=1)  # SSAH paper, CIFAR-size inputs
    alpha: float = bounded(0.01, lo=0.0)  # Table I; read as Adam's step size (see README)
    m: float = bounded(0.2, lo=0.0)  # SSAH paper: similarity margin
    sim_weight: float = bounded(1.0, lo=0.0)  # SSAH reference: weight of the similarity cost
    lambda_lf: float = bounded(0.1, lo=0.0)  # SSAH paper: weight of the low-frequency constraint


#: attack name -> its parameter class, in the paper's table column order
ATTACK_PARAMS: dict[str, type] = {
    "fgsm": FGSM,
    "pgd": PGD,
    "ssah": SSAH,
    "deepfool": DeepFool,
    "bim": BIM,
    "cw": CW,
    "jsma": JSMA,
}
