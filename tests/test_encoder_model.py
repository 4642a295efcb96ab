"""The three-stream encoder: shapes, parameter counts, the loss on logits, weights and checkpoints."""

import copy
import math

import pytest
import torch
import torchvision

from encoder.core import checkpoints, models, prediction, util
from encoder.core.custom_transforms import Normalization
from encoder.core.models import STEncoder, inference_model
from encoder.core.util import count_parameters

NORM = Normalization.unit(("eda", "temp"))
HEADS = ("audio", "eda", "temp", "fused")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return STEncoder().eval()


def test_shapes_and_parameter_counts(model):
    with torch.no_grad():
        out = model(torch.randn(3, 1, 16, 44), {"eda": torch.randn(3, 1, 11), "temp": torch.randn(3, 1, 11)})
    assert list(out.logits) == ["audio", "eda", "temp", "fused"]
    assert [tuple(t.shape) for t in out.logits.values()] == [(3, 7)] * 4
    assert out.embedding.shape == (3, 1536)
    # torchvision ResNet18 with a one-channel stem and no fc; 1D ResNet18 of BasicBlock1d [2, 2, 2, 2]
    assert count_parameters(model.audio) == 11_170_240
    assert count_parameters(model.bio["eda"]) == count_parameters(model.bio["temp"]) == 3_843_904
    assert count_parameters(model) == 19_060_444


def test_embedding_is_audio_eda_temp_in_that_order(model):
    audio, eda, temp = torch.randn(2, 1, 16, 44), torch.randn(2, 1, 11), torch.randn(2, 1, 11)
    with torch.no_grad():
        emb = model(audio, {"eda": eda, "temp": temp}).embedding
        assert torch.allclose(emb[:, :512], model.audio(audio))
        assert torch.allclose(emb[:, 512:1024], model.bio["eda"](eda))
        assert torch.allclose(emb[:, 1024:], model.bio["temp"](temp))
    assert model.feature_order == ("audio", "eda", "temp")


def test_loss_is_cross_entropy_on_logits():
    label = torch.tensor([[1.0, 0, 0, 0, 0, 0, 0], [0, 0.5, 0.5, 0, 0, 0, 0]])
    zeros = models.EncoderOutput(dict.fromkeys(HEADS, torch.zeros(2, 7)), torch.zeros(2, 1536))
    total, per_head = prediction.encoder_loss(zeros, label)
    assert math.isclose(float(total), 4 * math.log(7), rel_tol=1e-6)
    confident = torch.full((2, 7), -20.0)
    confident[0, 0] = 20.0
    confident[1, 1] = confident[1, 2] = 20.0
    out = models.EncoderOutput(dict.fromkeys(HEADS, confident), torch.zeros(2, 1536))
    total, _ = prediction.encoder_loss(out, label)
    # on logits: about 0 for the single label and 4 · ½·log 2 ≈ 1.39 on the tie; a softmax first would
    # squash the logits into [0, 1] and leave the loss near 4 · log 7 ≈ 7.8
    assert float(total) == pytest.approx(2 * math.log(2), abs=1e-3)


FOLD_RTOL = 1e-5  # of each output's largest magnitude; float32 folding measured at about 1.2e-6


def randomise_batchnorm(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every BatchNorm running statistics and an affine map far from identity (seeded): means in
    [-1, 1], variances in [0.25, 4], scales of 0.5 to 2 with a fifth of them negative, shifts in
    [-0.5, 0.5]. A fresh model has mean 0, variance 1, scale 1 and shift 0, so a fold that ignored them would pass."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
                n = bn.num_features
                bn.running_mean.uniform_(-1, 1, generator=gen)
                bn.running_var.uniform_(0.25, 4, generator=gen)
                sign = torch.where(torch.rand(n, generator=gen) < 0.2, -1.0, 1.0)
                bn.weight.copy_(torch.empty(n).uniform_(0.5, 2, generator=gen) * sign)
                bn.bias.uniform_(-0.5, 0.5, generator=gen)
    return model.eval()


@pytest.fixture(scope="module")
def far_from_identity():
    """An eval-mode encoder whose BatchNorms are far from identity, and a small batch of inputs."""
    torch.manual_seed(2)
    model = randomise_batchnorm(STEncoder(), seed=3)
    gen = torch.Generator().manual_seed(4)
    inputs = (torch.randn(4, 1, 16, 44, generator=gen), {"eda": torch.randn(4, 1, 11, generator=gen),
                                                         "temp": torch.randn(4, 1, 11, generator=gen)})
    with torch.no_grad():
        return model, inputs, model(*inputs)


def fold_error(folded: torch.nn.Module, inputs: tuple, reference: models.EncoderOutput) -> dict[str, float]:
    """Per output (four heads' logits and the 1536-d embedding): max |folded - reference| / max |reference|."""
    with torch.no_grad():
        out = folded(*inputs)
    outputs = {**out.logits, "embedding": out.embedding}
    return {name: float((outputs[name] - b).abs().max() / b.abs().max())
            for name, b in {**reference.logits, "embedding": reference.embedding}.items()}


def test_inference_model_folds_batchnorm_statistics_exactly(one_thread, far_from_identity):
    model, inputs, reference = far_from_identity
    folded = inference_model(model)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    errors = fold_error(folded, inputs, reference)
    assert max(errors.values()) <= FOLD_RTOL, errors


@pytest.mark.parametrize(("batchnorm", "affected"), [
    ("audio.layer2.0.bn1", ("audio", "fused", "embedding")),
    ("bio.eda.blocks.2.downsample.1", ("eda", "fused", "embedding")),
    ("bio.temp.stem.1", ("temp", "fused", "embedding")),
])
def test_fold_check_detects_one_batchnorm_folded_without_its_statistics(one_thread, far_from_identity, batchnorm,
                                                                        affected):
    """The check above has power: a fold that ignores the running statistics of a single BatchNorm
    (folds it as if mean 0, variance 1) moves every output that depends on it by over 1000 tolerances."""
    model, inputs, reference = far_from_identity
    wrong = copy.deepcopy(model)
    bn = wrong.get_submodule(batchnorm)
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0)
    errors = fold_error(inference_model(wrong), inputs, reference)
    assert all(errors[name] > 1000 * FOLD_RTOL for name in affected), errors


def test_local_resnet18_weights_load_into_the_audio_stream(tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    model = STEncoder(weights=tmp_path / "resnet18.pth")
    assert torch.allclose(model.audio.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert torch.allclose(model.audio.conv1.weight, reference.conv1.weight.sum(1, keepdim=True))
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(util.DataError, match="other.pth"):
        STEncoder(weights=tmp_path / "other.pth")


def test_checkpoint_of_another_shape_is_a_clear_error(tmp_path, model):
    state = checkpoints.encoder_state(model, NORM, {"clip_length": 11})
    state["model"] = {k: v for k, v in state["model"].items() if not k.startswith("fused")}
    state["model"]["fused.weight"] = torch.zeros(7, 256)
    state["model"]["fused.bias"] = torch.zeros(7)
    path = tmp_path / "other_shape.pth"
    torch.save(state, path)
    with pytest.raises(util.DataError, match="shape") as err:
        checkpoints.encoder_from_checkpoint(checkpoints.load_encoder_checkpoint(path), path)
    assert "other_shape.pth" in str(err.value)
    torch.save({"some": "dict"}, tmp_path / "foreign.pth")
    with pytest.raises(util.DataError, match="not an encoder checkpoint"):
        checkpoints.load_encoder_checkpoint(tmp_path / "foreign.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(util.DataError, match="junk.pth"):
        checkpoints.load_encoder_checkpoint(tmp_path / "junk.pth")


def test_keep_freq_stem_keeps_every_mel_band_and_travels_with_the_checkpoint(tmp_path):
    """`audio_stem` "keep_freq" strides the stem on time only: the first residual stage sees 32 mel rows, not
    8, a one-band shift of a narrow-band input stays a one-row shift there, the trunk's time positions do
    not change, and a checkpoint rebuilds the stem it was trained with (the weights alone cannot tell)."""
    torch.manual_seed(0)
    kept, standard = STEncoder(audio_stem="keep_freq").eval(), STEncoder().eval()
    stem = lambda net, x: net.maxpool(net.relu(net.bn1(net.conv1(x))))  # noqa: E731
    tone = torch.zeros(1, 1, 32, 110)
    tone[:, :, 12] = 1.0  # all energy in mel band 12, then in band 13
    shifted = torch.roll(tone, 1, dims=2)
    with torch.no_grad():
        a, b = stem(kept.audio, tone), stem(kept.audio, shifted)
        assert a.shape[2] == 32 and stem(standard.audio, tone).shape[2] == 8
        assert torch.allclose(b[:, :, 13], a[:, :, 12]) and not torch.allclose(b[:, :, 12], a[:, :, 12])
        assert kept.trunk()(tone).shape == standard.trunk()(tone).shape == (1, 512, 110 // models.TRUNK_STRIDE + 1)
    inputs = {"clip_length": 11, "audio_stem": "keep_freq"}
    signature = checkpoints.input_signature({**models.config.STE_inputs, **inputs})
    assert signature["audio_stem"] == "keep_freq"
    assert "audio_stem" not in checkpoints.input_signature({**models.config.STE_inputs, "clip_length": 11})
    state = checkpoints.encoder_state(kept, NORM, signature)
    rebuilt = checkpoints.encoder_from_checkpoint(state, tmp_path / "best.pth")
    assert rebuilt.audio.conv1.stride == (1, 2) and rebuilt.audio.maxpool.stride == (1, 2)
    with pytest.raises(ValueError, match="audio_stem"):
        STEncoder(audio_stem="wide")
