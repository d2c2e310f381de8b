"""Config loading, validation and overrides."""

import pytest

from pipeline.config import load_config, parse_override
from pipeline.errors import PipelineError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", ["smoke", "demo", "paper"])
def test_builtin_configs_validate(name):
    config = load_config(name)
    assert config.name == name
    assert config.attack.names == ["fgsm", "pgd", "ssah", "deepfool", "bim", "cw", "jsma"]


def test_paper_config_carries_the_papers_numbers():
    config = load_config("paper")
    p = config.attack.params
    assert (p.fgsm.eps, p.pgd.eps, p.pgd.alpha, p.pgd.steps) == (0.008, 0.01, 0.02, 40)
    assert (p.bim.eps, p.bim.alpha, p.bim.steps, p.deepfool.steps) == (0.03, 0.01, 10, 20)
    assert (p.cw.c, p.cw.kappa, p.cw.steps, p.cw.lr, p.jsma.gamma, p.ssah.alpha) == (2, 2, 500, 0.01, 0.02, 0.01)
    assert config.cae.arch.widths == [512, 256, 128, 64] and config.aae.arch.widths == [512, 400, 300, 200, 100, 64]
    assert (config.cae.optim.epochs, config.aae.optim.epochs, config.aae.warmup_epochs) == (700, 1500, 300)
    o = config.aae.optim
    assert (o.lr, o.momentum, o.weight_decay, o.batch_size, o.milestones, o.gamma) == (
        0.03,
        0.9,
        1e-4,
        256,
        [500, 1000],
        0.1,
    )
    assert (config.cae.lambda_kl, config.aae.lambda_kl) == (1e-3, 1e-3)
    roles = config.sample.roles
    assert (roles.cae_train.count, roles.aae_train.count, roles.test.count) == (10000, 40000, 10000)


def test_override_sets_nested_values_with_yaml_types():
    config = load_config("smoke", ["sample.seed=2", "cae.lambda_kl=1e-2", "attack.names=[fgsm, pgd]"])
    assert config.sample.seed == 2 and config.cae.lambda_kl == 0.01 and config.attack.names == ["fgsm", "pgd"]


def test_unknown_key_names_it_and_the_closest_valid_one():
    with pytest.raises(PipelineError, match=r"unknown key 'sample.sed'.*did you mean 'seed'"):
        load_config("smoke", ["sample.sed=1"])
    with pytest.raises(PipelineError, match=r"unknown key 'attack.params.pgd.stepz'.*'steps'"):
        load_config("smoke", ["attack.params.pgd.stepz=3"])


def test_wrong_type_names_key_value_and_type():
    with pytest.raises(PipelineError, match=r"'sample.seed': value 'abc' is not of type int"):
        load_config("smoke", ["sample.seed=abc"])
    with pytest.raises(PipelineError, match=r"'cae.optim.amp': value 3 is not of type bool"):
        load_config("smoke", ["cae.optim.amp=3"])


def test_out_of_range_and_choices():
    with pytest.raises(PipelineError, match=r"'attack.params.fgsm.eps': value -0.1 is below the minimum 0"):
        load_config("smoke", ["attack.params.fgsm.eps=-0.1"])
    with pytest.raises(PipelineError, match=r"'attack.params.pgd.steps': value 0 is below the minimum 1"):
        load_config("smoke", ["attack.params.pgd.steps=0"])
    with pytest.raises(PipelineError, match=r"'attack.names': value 'pgdd' is not one of"):
        load_config("smoke", ["attack.names=[fgsm, pgdd]"])


def test_consistency_checks():
    with pytest.raises(PipelineError, match="'sample.roles.test.dataset': 'nowhere' is not in sample.datasets"):
        load_config("smoke", ["sample.roles.test.dataset=nowhere"])
    with pytest.raises(PipelineError, match="same latent size"):
        load_config("smoke", ["cae.arch.widths=[32, 16]"])


def test_bad_override_syntax():
    with pytest.raises(PipelineError, match="expected KEY.PATH=VALUE"):
        parse_override("sample.seed")


def test_user_file_extends_a_builtin(write_config):
    path = write_config({"sample": {"seed": 7}})
    config = load_config(str(path))
    assert config.name == "test" and config.sample.seed == 7 and config.sample.image_size == 16


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(PipelineError, match="cannot read config"):
        load_config(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("sample: [unclosed\n")
    with pytest.raises(PipelineError, match="not valid YAML"):
        load_config(str(bad))
    with pytest.raises(PipelineError, match="no built-in config 'dmeo'"):
        load_config("dmeo")


def test_a_budget_in_steps_stretches_epochs_milestones_and_warm_up_alike():
    from pipeline.config import schedule

    optim = {"epochs": 30, "steps": 3600, "batch_size": 32, "milestones": [10, 20]}
    assert schedule(optim, 6, 950) == ({"epochs": 120, "batch_size": 32, "milestones": [40, 80]}, 24)
    assert schedule(optim, 6, 95)[0]["epochs"] == 1200 and schedule(optim, 6, 95)[1] == 240  # 3 steps an epoch
    assert schedule({**optim, "steps": None}, 6, 950) == ({"epochs": 30, "batch_size": 32, "milestones": [10, 20]}, 6)
