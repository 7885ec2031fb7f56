"""Datasets, splits, augmentation, building blocks and model builders (no Ray needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepseek_ray.data import build_batch_transform, load_dataset, mixup, random_shift, split_indices
from deepseek_ray.models import Architecture, CellNet, build_model, load_bundle, save_bundle
from deepseek_ray.nn import OPS, FeedForward, MultiHeadAttention, make_op, register_op


def test_split_is_deterministic_and_disjoint():
    a = split_indices(100, (0.8, 0.1, 0.1), seed=3)
    b = split_indices(100, (0.8, 0.1, 0.1), seed=3)
    c = split_indices(100, (0.8, 0.1, 0.1), seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    assert sorted(np.concatenate(a).tolist()) == list(range(100))


def test_normalisation_is_fitted_on_the_training_split_only():
    splits = load_dataset("digits", seed=0)
    assert abs(float(splits.train.x.mean())) < 1e-4 and abs(float(splits.train.x.std()) - 1) < 1e-3
    assert abs(float(splits.test.x.mean())) > 1e-4  # test statistics were not used
    raw = splits.raw("test")
    assert 0 <= float(raw.min()) and float(raw.max()) <= 255.001


def test_mnist5k_is_the_shipped_5000_images():
    splits = load_dataset("mnist5k", seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (4000, 500, 500)
    assert splits.input_shape == (1, 28, 28) and splits.num_classes == 10


def test_unknown_dataset_names_the_registry():
    with pytest.raises(ValueError, match="registered datasets are .*digits, .*mnist5k"):
        load_dataset("imagenet")


def test_augmentations_are_seeded_and_keep_shapes():
    x, y = torch.randn(8, 1, 8, 8), torch.arange(8) % 3
    shift = random_shift(2)
    out1, _ = shift(x, y, torch.Generator().manual_seed(1))
    out2, _ = shift(x, y, torch.Generator().manual_seed(1))
    assert torch.equal(out1, out2) and out1.shape == x.shape and not torch.equal(out1, x)
    mixed, soft = mixup(0.4, 3)(x, y, torch.Generator().manual_seed(0))
    assert soft.shape == (8, 3) and torch.allclose(soft.sum(1), torch.ones(8))
    with pytest.raises(ValueError, match="allowed: random_shift, mixup, cutmix"):
        build_batch_transform([{"type": "rotate"}], 10)


def test_architecture_string_round_trips_and_rebuilds_the_same_network():
    text = "c8|conv3x3+sep_conv3x3|dilated_conv3x3+maxpool3x3|avgpool3x3+zero+identity"
    arch = Architecture.decode(text)
    assert arch.encode() == text and len(arch.cells) == 3
    torch.manual_seed(0)
    a = CellNet(text, in_channels=1, num_classes=4)
    torch.manual_seed(0)
    b = CellNet(arch.encode(), in_channels=1, num_classes=4)
    x = torch.randn(2, 1, 16, 16)
    assert torch.equal(a.eval()(x), b.eval()(x))
    with pytest.raises(ValueError, match="registered ops"):
        Architecture.decode("c8|conv9x9")


def test_user_registered_op_is_usable_in_an_architecture():
    register_op("conv1x1_test")(lambda c: torch.nn.Conv2d(c, c, 1))
    try:
        net = CellNet("c4|conv1x1_test", in_channels=1, num_classes=2)
        assert net(torch.zeros(1, 1, 8, 8)).shape == (1, 2)
    finally:
        OPS.pop("conv1x1_test")
    with pytest.raises(ValueError, match="unknown op"):
        make_op("nope", 4)


def test_multi_head_attention_matches_torch():
    torch.manual_seed(0)
    ours = MultiHeadAttention(dim=16, heads=4).eval()
    reference = torch.nn.MultiheadAttention(16, 4, batch_first=True).eval()
    reference.in_proj_weight.data.copy_(ours.in_proj.weight)
    reference.in_proj_bias.data.copy_(ours.in_proj.bias)
    reference.out_proj.weight.data.copy_(ours.out_proj.weight)
    reference.out_proj.bias.data.copy_(ours.out_proj.bias)
    x = torch.randn(3, 7, 16)
    mask = torch.zeros(3, 7, dtype=torch.bool)
    mask[:, -2:] = True
    expected, _ = reference(x, x, x, key_padding_mask=mask, need_weights=False)
    assert torch.allclose(ours(x, key_padding_mask=mask), expected, atol=1e-5)
    assert FeedForward(16)(x).shape == x.shape


def test_bundle_holds_everything_and_loads_without_ray(tmp_path):
    spec = {"type": "cellnet", "arch": "c8|conv3x3", "in_channels": 1, "num_classes": 3}
    model = build_model(spec)
    prefixed = {f"module.{k}": v for k, v in model.state_dict().items()}  # as DDP names them
    save_bundle(tmp_path, prefixed, spec, labels=["a", "b", "c"], input_shape=(1, 8, 8),
                preprocessing={"type": "normalize", "mean": 10.0, "std": 5.0}, seed=7, config={"name": "t"})
    weights = torch.load(tmp_path / "weights.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in weights)
    loaded, meta = load_bundle(tmp_path)
    assert meta["architecture"] == "c8|conv3x3" and meta["labels"] == ["a", "b", "c"] and meta["seed"] == 7
    assert {"torch", "python"} <= set(meta["versions"]) and meta["config"] == {"name": "t"}
    x = torch.full((2, 1, 8, 8), 10.0)  # raw input: the bundle's normalisation maps it to zeros
    model.eval()
    expected = torch.softmax(model(torch.zeros(2, 1, 8, 8)), -1)
    assert torch.allclose(loaded(x), expected, atol=1e-6)
