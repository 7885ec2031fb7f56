"""PretrainedModel: AutoModel underneath, a classification head, save/reload, ONNX, pinned weights, and
Hugging Face's call conventions (keyword inputs, ``labels`` → ``.loss``, an output with ``.logits``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput

from deepseek_ray.files import sha256_of
from deepseek_ray.models import PretrainedModel, build_model, minilm_dir
from deepseek_ray.models.pretrained import MINILM_SHA256


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> str:
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        pad_token_id=0,
    )
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
    assert not torch.allclose(
        pretrained.encoder.embeddings.word_embeddings.weight, scratch.encoder.embeddings.word_embeddings.weight
    )


def test_build_model_spec_and_onnx_export(tiny_bert, tmp_path):
    import onnxruntime as ort

    model = build_model(
        {"type": "pretrained", "name_or_dir": tiny_bert, "num_classes": 2, "vocab_size": 64, "max_len": 6}
    ).eval()
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


def test_keyword_call_returns_hf_output_and_bare_call_a_tensor(tiny_bert):
    model = PretrainedModel.from_pretrained(tiny_bert).add_classification_head(num_classes=3).eval()
    bare = model(IDS)
    assert isinstance(bare, torch.Tensor)
    out = model(input_ids=IDS)
    assert isinstance(out, SequenceClassifierOutput) and out.loss is None
    assert torch.allclose(out.logits, bare, atol=1e-6)
    # An explicit mask equal to the padding mask changes nothing; token_type_ids of zeros are BERT's default.
    explicit = model(input_ids=IDS, attention_mask=(IDS != 0).long(), token_type_ids=torch.zeros_like(IDS))
    assert torch.allclose(explicit.logits, bare, atol=1e-6)
    assert torch.allclose(model(IDS, attention_mask=(IDS != 0).long()).logits, bare, atol=1e-6)


def test_attention_mask_when_given_overrides_the_padding_mask(tiny_bert):
    model = PretrainedModel.from_pretrained(tiny_bert).add_classification_head(num_classes=3).eval()
    first_two = torch.zeros_like(IDS)
    first_two[:, :2] = 1
    assert torch.allclose(model(input_ids=IDS, attention_mask=first_two).logits, model(IDS[:, :2]), atol=1e-5)


def test_labels_give_the_loss_sequence_classification_uses(tiny_bert):
    classifier = PretrainedModel.from_pretrained(tiny_bert).add_classification_head(num_classes=3).eval()
    labels = torch.tensor([2, 0])
    out = classifier(input_ids=IDS, labels=labels)
    assert torch.allclose(out.loss, F.cross_entropy(out.logits, labels))
    multi_hot = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])  # float labels shaped like the logits: multi-label
    out = classifier(input_ids=IDS, labels=multi_hot)
    assert torch.allclose(out.loss, F.binary_cross_entropy_with_logits(out.logits, multi_hot))
    regressor = PretrainedModel.from_pretrained(tiny_bert).add_classification_head(num_classes=1).eval()
    targets = torch.tensor([0.5, -1.0])
    out = regressor(input_ids=IDS, labels=targets)
    assert torch.allclose(out.loss, F.mse_loss(out.logits.squeeze(-1), targets))


def test_without_a_head_keywords_give_the_pooled_encoder_output(tiny_bert):
    model = PretrainedModel.from_pretrained(tiny_bert).eval()
    out = model(input_ids=IDS)
    assert isinstance(out, BaseModelOutputWithPooling)
    assert out.last_hidden_state.shape == (2, 6, 16)
    assert torch.allclose(out.pooler_output, model(IDS), atol=1e-6)
    with pytest.raises(ValueError, match="add_classification_head"):
        model(input_ids=IDS, labels=torch.tensor([0, 1]))


def test_token_ids_are_passed_once(tiny_bert):
    model = PretrainedModel.from_pretrained(tiny_bert).add_classification_head(num_classes=2)
    with pytest.raises(TypeError, match="once"):
        model(IDS, input_ids=IDS)
    with pytest.raises(TypeError, match="token ids are needed"):
        model(attention_mask=(IDS != 0).long())


def test_trainer_still_uses_the_bare_path(tiny_bert):
    from deepseek_ray.data.datasets import ArrayDataset
    from deepseek_ray.optim import MixedPrecisionTrainer

    torch.manual_seed(0)
    model = PretrainedModel.from_pretrained(tiny_bert).add_classification_head(num_classes=2)
    data = ArrayDataset(IDS.repeat(4, 1), torch.tensor([0, 1]).repeat(4))
    history = MixedPrecisionTrainer(model, "adamw", 1e-3, per_device_train_batch_size=4).fit(data, data, epochs=2)
    assert len(history) == 2 and all(np.isfinite(row["train_loss"]) for row in history)


@pytest.fixture(scope="module")
def minilm_and_tokenizer():
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    model = PretrainedModel.from_pretrained("all-MiniLM-L6-v2").add_classification_head(num_classes=2)
    return model, AutoTokenizer.from_pretrained(minilm_dir())


TEXTS = ["A warm, funny and beautifully acted film.", "Dull.", "I would not watch it again, not even for free."]


def test_minilm_takes_its_tokenizer_output_as_keywords(minilm_and_tokenizer):
    model, tokenizer = minilm_and_tokenizer
    model.eval()
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}
    with torch.no_grad():
        out = model(**batch)
        assert isinstance(out, SequenceClassifierOutput) and out.loss is None
        assert torch.allclose(out.logits, model(batch["input_ids"]), atol=1e-5)


def test_minilm_labels_give_cross_entropy_and_a_backward_step_works(minilm_and_tokenizer):
    model, tokenizer = minilm_and_tokenizer
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    labels = torch.tensor([1, 0, 0])

    def eval_loss() -> float:
        with torch.no_grad():
            return float(model.eval()(**batch, labels=labels).loss)

    before = eval_loss()
    out = model.train()(**batch, labels=labels)
    assert torch.allclose(out.loss, F.cross_entropy(out.logits, labels))
    out.loss.backward()
    assert model.head[1].weight.grad.abs().sum() > 0
    assert model.encoder.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    # DDP refuses a parameter without a gradient (BERT's pooler, unused under mean pooling, was one).
    assert [name for name, p in model.named_parameters() if p.grad is None] == []
    torch.optim.SGD(model.parameters(), lr=0.05).step()
    assert eval_loss() < before  # one step on these labels lowers their loss
