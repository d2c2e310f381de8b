"""Every attack of the catalog through its spec, on a tiny trained victim and real image crops."""

from dataclasses import asdict, fields

import pytest
import torch
import torch.nn.functional as F

from pipeline.attacks.catalog import ATTACKS, build_attack
from pipeline.attacks.custom import jsma_targets
from pipeline.config import load_config
from pipeline.errors import PipelineError
from pipeline.victims import predict

pytestmark = pytest.mark.unit

#: iterations of an iterative attack (a ``steps`` parameter) in a unit test; Table I's values live in the configs
FAST_STEPS = 10
#: attacks that need other parameters than their spec's defaults with ``FAST_STEPS`` to be quick and still bite
FASTER = {"cw": {"steps": 30}, "ssah": {"steps": 30}, "jsma": {"gamma": 0.1}}


def fast(name: str) -> dict:
    """Attack ``name``'s parameters for a unit test: its spec's defaults, ``steps`` capped (every attack of
    the catalog has them, a new one included), then its entry of ``FASTER``."""
    params = asdict(ATTACKS[name].params())
    capped = {"steps": min(params["steps"], FAST_STEPS)} if "steps" in params else {}
    return {**params, **capped, **FASTER.get(name, {})}


#: L-inf budgets large enough that any victim must yield on some of 32 images (Table I's 0.008 may not flip any);
#: SSAH at Table I's similarity weight is imperceptible and needs its full 150 steps to flip any
FLIP = {"fgsm": {"eps": 0.03}, "pgd": {"eps": 0.03}, "ssah": {"steps": 150}}


def _attack(name, victim, images, labels, **overrides):
    params = {**fast(name), **overrides}
    attack = build_attack(name, victim, params)
    torch.manual_seed(0)
    return attack(images, labels)


def test_the_victim_learned_something(photo_victim):
    victim, images, labels = photo_victim
    assert float((predict(victim, images, torch.device("cpu")) == labels).float().mean()) > 0.5


@pytest.mark.parametrize("name,eps", [("fgsm", 0.008), ("pgd", 0.01), ("bim", 0.03)])
def test_linf_attacks_stay_in_the_ball_after_float16_storage(photo_victim, name, eps):
    victim, images, labels = photo_victim
    adv = _attack(name, victim, images, labels)
    stored = adv.half().float()
    assert float((stored - images).abs().max()) <= eps + 1e-3  # float16 spacing is <= 2^-11 on [0, 1]
    assert float(stored.min()) >= 0 and float(stored.max()) <= 1


@pytest.mark.parametrize("name", ["fgsm", "pgd", "bim"])
def test_linf_attacks_raise_the_loss_of_every_image_at_table_i_budgets(photo_victim, name):
    victim, images, labels = photo_victim
    clean = predict(victim, images, torch.device("cpu"))[:32]
    adv = _attack(name, victim, images[:32], clean)
    with torch.no_grad():
        before = F.cross_entropy(victim(images[:32]), clean, reduction="none")
        after = F.cross_entropy(victim(adv), clean, reduction="none")
    assert bool((after > before).all()), f"{name} lowered the loss of {int((after <= before).sum())} images"


@pytest.mark.parametrize("name", list(ATTACKS))
def test_every_spec_passes_its_parameters_whole_to_its_class(photo_victim, name):
    spec, params = ATTACKS[name], ATTACKS[name].params()
    attack = spec.build(photo_victim[0], params)
    for field in fields(params):
        if field.name != "target":  # JSMA's target rule becomes its targeted mode
            assert getattr(attack, field.name) == getattr(params, field.name), field.name
    assert spec.title and spec.name == name


def test_attack_limits_come_from_the_spec_unless_the_config_sets_them():
    paper, demo = load_config("paper").attack, load_config("demo").attack
    assert paper.limits_of("jsma").shard_size == ATTACKS["jsma"].limits.shard_size == 100
    assert paper.limits_of("fgsm").shard_size is None and paper.limits_of("fgsm").max_images is None
    assert (demo.limits_of("jsma").max_images, demo.limits_of("jsma").shard_size) == (16, 8)
    assert demo.limits_of("deepfool").shard_size == 250  # the spec's, the demo sets none


@pytest.mark.parametrize("name", list(ATTACKS))
def test_every_attack_changes_some_predictions(photo_victim, name):
    victim, images, labels = photo_victim
    clean = predict(victim, images, torch.device("cpu"))
    subset = slice(0, 4) if name in ("jsma", "deepfool") else slice(0, 32)  # per-image attacks are slow
    adv = _attack(name, victim, images[subset], clean[subset], **FLIP.get(name, {}))
    assert adv.shape == images[subset].shape and bool(torch.isfinite(adv).all())
    flipped = predict(victim, adv, torch.device("cpu")) != clean[subset]
    assert float(flipped.float().mean()) > 0, f"{name} changed no prediction"


def test_jsma_targets_work_for_any_number_of_classes(photo_victim):
    victim, images, labels = photo_victim
    labels = labels[:8]
    nxt = jsma_targets("next", victim)(images[:8], labels)
    assert bool((nxt == (labels + 1) % 4).all()) and int(nxt.max()) < 4
    runner = jsma_targets("runner_up", victim)(images[:8], labels)
    assert bool((runner != labels).all()) and int(runner.max()) < 4


def test_unknown_attack_is_refused(photo_victim):
    with pytest.raises(PipelineError, match="unknown attack 'fgsn'"):
        build_attack("fgsn", photo_victim[0], {})


def test_batched_deepfool_matches_torchattacks_per_image(photo_victim):
    import torchattacks

    victim, images, labels = photo_victim
    clean = predict(victim, images[:6], torch.device("cpu"))
    ours = build_attack("deepfool", victim, {"steps": 20, "overshoot": 0.02})(images[:6], clean)
    reference = torchattacks.DeepFool(victim, steps=20, overshoot=0.02)(images[:6], clean)
    assert torch.allclose(ours, reference, atol=1e-5)


def test_lean_jsma_matches_torchattacks(photo_victim):
    import torchattacks

    victim, images, labels = photo_victim
    clean = predict(victim, images[:2], torch.device("cpu"))
    params = {"theta": 1.0, "gamma": 0.1, "target": "next"}
    ours = build_attack("jsma", victim, params)(images[:2], clean)
    reference = torchattacks.JSMA(victim, theta=1.0, gamma=0.1)
    reference.set_mode_targeted_by_function(lambda x, y: (y + 1) % 4, quiet=True)
    assert torch.equal(ours, reference(images[:2], clean))
