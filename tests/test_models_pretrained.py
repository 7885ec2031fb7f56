"""PretrainedModel: AutoModel underneath, a classification head, save/reload, ONNX, pinned weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepseek_ray.models import PretrainedModel, build_model, minilm_dir
from deepseek_ray.export import sha256_of
from deepseek_ray.models.pretrained import MINILM_SHA256


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> str:
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, pad_token_id=0)
    BertModel(config).save_pretrained(folder)
    return str(folder)


IDS = torch.tensor([[5, 6, 7, 8, 0, 0], [9, 10, 0, 0, 0, 0]])


def test_head_save_and_reload(tiny_bert, tmp_path):
    model = PretrainedModel.from_pretrained(tiny_bert).add_classification_head(num_classes=10).eval()
    logits = model(IDS)
    assert logits.shape == (2, 10)
    model.save_pretrained(tmp_path / "saved")
    again = PretrainedModel.from_pretrained(tmp_path / "saved").eval()
    assert again.head_config == {"num_classes": 10, "dropout": 0.1}
    assert torch.allclose(again(IDS), logits, atol=1e-6)


def test_padding_is_masked(tiny_bert):
    model = PretrainedModel.from_pretrained(tiny_bert).add_classification_head(num_classes=3).eval()
    longer = torch.cat([IDS, torch.zeros(2, 4, dtype=torch.long)], dim=1)
    assert torch.allclose(model(IDS), model(longer), atol=1e-5)


def test_from_config_is_the_same_architecture_untrained(tiny_bert):
    pretrained, scratch = PretrainedModel.from_pretrained(tiny_bert), PretrainedModel.from_config(tiny_bert, seed=1)
    shapes = lambda m: {k: v.shape for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(pretrained) == shapes(scratch)
    assert not torch.allclose(pretrained.encoder.embeddings.word_embeddings.weight,
                              scratch.encoder.embeddings.word_embeddings.weight)


def test_build_model_spec_and_onnx_export(tiny_bert, tmp_path):
    import onnxruntime as ort

    model = build_model({"type": "pretrained", "name_or_dir": tiny_bert, "num_classes": 2, "vocab_size": 64,
                         "max_len": 6}).eval()
    path = tmp_path / "bert.onnx"
    torch.onnx.export(model, (IDS,), path, dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: IDS.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(out, model(IDS).numpy(), atol=1e-4)


def test_pinned_sha256_is_checked(tiny_bert):
    actual = sha256_of(f"{tiny_bert}/model.safetensors")
    assert PretrainedModel.from_pretrained(tiny_bert, expected_sha256=actual) is not None
    with pytest.raises(ValueError, match="does not match the pinned"):
        PretrainedModel.from_pretrained(tiny_bert, expected_sha256="0" * 64)


def test_offline_hub_name_says_what_to_pass(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="Pass a folder written by save_pretrained"):
        PretrainedModel.from_pretrained("deepseek-ray-tests/no-such-model")


def test_packaged_minilm_loads_with_its_pinned_weights():
    folder = minilm_dir()
    assert sha256_of(folder / "model.safetensors") == MINILM_SHA256
    model = PretrainedModel.from_pretrained("all-MiniLM-L6-v2").add_classification_head(num_classes=2).eval()
    assert 22_000_000 < sum(p.numel() for p in model.encoder.parameters()) < 23_000_000
    assert model(torch.tensor([[101, 2307, 3185, 102]])).shape == (1, 2)
