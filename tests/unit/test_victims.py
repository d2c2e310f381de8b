"""Victim architectures, training, and loading weights files safely."""

import pickle

import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.victims import ARCHITECTURES, build_victim, load_victim

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_every_architecture_gives_logits_and_pooled_features(arch):
    model = build_victim(arch, 7).eval()
    x = torch.rand(2, 3, 32, 32)
    assert model(x).shape == (2, 7) and model.features(x).ndim == 2


def test_trained_photo_victim_beats_chance(photo_victim):
    from pipeline.victims import predict

    model, images, labels = photo_victim
    assert float((predict(model, images, torch.device("cpu")) == labels).float().mean()) > 0.5


def test_weights_round_trip(tmp_path):
    model = build_victim("small_cnn", 3)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    loaded = load_victim("small_cnn", 3, tmp_path / "w.pt", torch.device("cpu"))
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(loaded(x), model.eval()(x))


def test_bad_weights_files_fail_clearly(tmp_path):
    with pytest.raises(PipelineError, match="does not exist"):
        load_victim("small_cnn", 3, tmp_path / "missing.pt", torch.device("cpu"))
    torch.save({"a": [1, 2]}, tmp_path / "notdict.pt")
    with pytest.raises(PipelineError, match="not a state dict of tensors"):
        load_victim("small_cnn", 3, tmp_path / "notdict.pt", torch.device("cpu"))
    torch.save(build_victim("small_cnn", 5).state_dict(), tmp_path / "five.pt")
    with pytest.raises(PipelineError, match="does not fit architecture small_cnn with 3 classes"):
        load_victim("small_cnn", 3, tmp_path / "five.pt", torch.device("cpu"))

    class Payload:
        def __reduce__(self):
            return (print, ("owned",))

    with open(tmp_path / "evil.pt", "wb") as handle:
        pickle.dump(Payload(), handle)
    with pytest.raises(PipelineError, match="cannot be loaded safely"):
        load_victim("small_cnn", 3, tmp_path / "evil.pt", torch.device("cpu"))
    with pytest.raises(PipelineError, match="unknown victim architecture 'resnet9'"):
        build_victim("resnet9", 3)
