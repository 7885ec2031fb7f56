"""TextPreprocessor: tokenizers, fixed length, augmentation of the training split only, no leakage."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
import torch

from deepseek_ray.data import TextPreprocessor, train_tokenizer, wordnet
from deepseek_ray.data.text import random_deletion, random_swap, synonym_replacement


def _reviews(n: int = 60) -> pd.DataFrame:
    words = ["good", "great", "fine", "bad", "awful", "dull"]
    rows = [{"text": f"the film was {words[i % 6]} and the plot number {i} was {words[(i + 1) % 6]}",
             "label": "pos" if i % 6 < 3 else "neg"} for i in range(n)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_trained_tokenizer_sees_the_training_split_only(tmp_path, kind):
    frame = _reviews()
    pre = TextPreprocessor(tokenizer=kind, max_len=12, output_dir=tmp_path, seed=0)
    splits = pre.process(frame)
    held_out = np.concatenate([splits.val.rows, splits.test.rows])
    frame.loc[held_out, "text"] = [f"zyzzyva{i} quokkaword" for i in range(len(held_out))]
    splits = TextPreprocessor(tokenizer=kind, max_len=12, output_dir=tmp_path, seed=0).process(frame)
    vocab = set(load_vocab(splits.preprocessing["tokenizer"]))
    assert not any("quokka" in token or "zyzzyva" in token for token in vocab)
    assert "film" in vocab
    assert splits.train.x.shape[1] == 12 and splits.train.x.dtype == torch.int64
    assert splits.preprocessing["pad_id"] == 0 and splits.model_inputs()["vocab_size"] == len(vocab)


def load_vocab(path: str) -> list[str]:
    from tokenizers import Tokenizer

    return list(Tokenizer.from_file(path).get_vocab())


def test_truncation_and_padding_to_max_len(tmp_path):
    pre = TextPreprocessor(tokenizer="wordpiece", max_len=5, output_dir=tmp_path)
    pre.process(_reviews())
    ids = pre.encode(["good", "the film was good and the plot was great"])
    assert ids.shape == (2, 5) and ids[0, 1:].tolist() == [0, 0, 0, 0] and (ids[1] != 0).all()


def test_tokenizer_is_saved_beside_a_data_file(tmp_path):
    path = tmp_path / "raw_data.csv"
    _reviews().to_csv(path, index=False)
    splits = TextPreprocessor(tokenizer="wordpiece", max_len=8).process(str(path))
    saved = splits.preprocessing["tokenizer"]
    assert saved.startswith(str(tmp_path / "raw_data.wordpiece")) and saved.endswith(".tokenizer.json")


def test_local_tokenizer_folder_and_offline_hub_name(tmp_path, monkeypatch):
    from transformers import PreTrainedTokenizerFast

    folder = tmp_path / "tok"
    PreTrainedTokenizerFast(tokenizer_object=train_tokenizer(_reviews().text, "wordpiece", 100),
                            pad_token="[PAD]", unk_token="[UNK]").save_pretrained(folder)
    splits = TextPreprocessor(tokenizer=str(folder), max_len=8).process(_reviews())
    assert splits.preprocessing["tokenizer"] == str(folder) and splits.train.x.shape[1] == 8
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="Pass a local tokenizer folder .*or tokenizer='wordpiece' / 'bpe'"):
        TextPreprocessor(tokenizer="deepseek-ray-tests/no-such-tokenizer").process(_reviews())


def test_missing_columns_are_named():
    with pytest.raises(KeyError, match=r"\['review'\] not found; the columns are \['text', 'label'\]"):
        TextPreprocessor(text_column="review").process(_reviews())


def test_duplicates_never_straddle_splits(tmp_path):
    frame = pd.concat([_reviews(), _reviews()], ignore_index=True)  # every text twice
    splits = TextPreprocessor(tokenizer="wordpiece", max_len=8, output_dir=tmp_path).process(frame)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 60


def test_augmented_copies_stay_in_the_training_split(tmp_path):
    plain = TextPreprocessor(tokenizer="wordpiece", max_len=16, output_dir=tmp_path).process(_reviews())
    pre = TextPreprocessor(tokenizer="wordpiece", max_len=16, output_dir=tmp_path, copies=2, p=0.3,
                           augmentation=["random_swap", "random_deletion"])
    augmented = pre.process(_reviews())
    n = len(plain.train)
    assert len(augmented.train) == n * (1 + 2 * 2)
    assert len(augmented.val) == len(plain.val) and len(augmented.test) == len(plain.test)
    assert set(augmented.train.rows) == set(plain.train.rows)
    assert not set(augmented.train.rows) & set(np.concatenate([augmented.val.rows, augmented.test.rows]))
    assert torch.equal(augmented.train.y[n:], augmented.train.y[:n].repeat(4))  # copies keep their row's label
    assert not torch.equal(augmented.train.x[n : 2 * n], augmented.train.x[:n])


def test_swap_and_deletion_follow_p():
    rng = random.Random(0)
    text = " ".join(f"w{i}" for i in range(20))
    swapped = random_swap(0.2)([text], rng)[0].split()
    assert sorted(swapped) == sorted(text.split()) and swapped != text.split()
    kept = [len(random_deletion(0.5)([text], rng)[0].split()) for _ in range(200)]
    assert 8 < np.mean(kept) < 12
    assert random_deletion(1.0)(["only words here"], rng)[0] in {"only", "words", "here"}


def test_synonym_replacement_uses_wordnet():
    try:
        reader = wordnet()
    except LookupError as err:
        pytest.skip(f"WordNet is not installed: {err}")
    out = synonym_replacement(0.2)(["a truly wonderful film"], random.Random(0))[0].split()
    changed = [(a, b) for a, b in zip("a truly wonderful film".split(), out) if a != b]
    assert changed, out
    for original, replacement in changed:
        lemmas = {l.name().replace("_", " ") for s in reader.synsets(original) for l in s.lemmas()}
        assert replacement in lemmas


def _tiny_marian(folder, texts):
    from transformers import MarianConfig, MarianMTModel, PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=train_tokenizer(texts, "wordpiece", 120), pad_token="[PAD]",
                                        unk_token="[UNK]", eos_token="[SEP]")
    torch.manual_seed(0)
    config = MarianConfig(vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1,
                          encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                          max_position_embeddings=64, pad_token_id=0, eos_token_id=tokenizer.eos_token_id,
                          decoder_start_token_id=0)
    MarianMTModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_back_translation_with_local_marian_models(tmp_path):
    texts = _reviews().text.tolist()
    forward, backward = _tiny_marian(tmp_path / "en-xx", texts), _tiny_marian(tmp_path / "xx-en", texts)
    spec = {"type": "back_translation", "forward": forward, "backward": backward, "max_new_tokens": 12}
    pre = TextPreprocessor(tokenizer="wordpiece", max_len=16, output_dir=tmp_path, augmentation=[spec])
    splits = pre.process(_reviews())
    n = len(splits.train) // 2
    assert len(splits.train) == 2 * n and set(splits.train.rows[n:]) == set(splits.train.rows[:n])
    assert not torch.equal(splits.train.x[n:], splits.train.x[:n])  # random models: different text
    with pytest.raises(ValueError, match="back_translation.forward: cannot load"):
        TextPreprocessor(augmentation=[{"type": "back_translation", "forward": str(tmp_path / "missing")}])


def test_a_text_file_through_load_dataset(tmp_path):
    from deepseek_ray.data import load_dataset

    path = tmp_path / "reviews.jsonl"
    _reviews().rename(columns={"text": "review", "label": "verdict"}).to_json(path, orient="records", lines=True)
    splits = load_dataset(str(path), label="verdict", max_len=10, seed=0)
    assert splits.kind.name == "text" and splits.train.x.shape[1] == 10 and splits.labels == ["neg", "pos"]
    assert splits.preprocessing["tokenizer"].startswith(str(tmp_path))


def test_majority_baseline_is_the_training_split_s_majority(tmp_path):
    """The pipeline's baseline stage on text: the training split's majority class, scored on the test split
    (no Ray: nothing to train). Labels are set so that the training and test majorities differ."""
    import io

    from deepseek_ray.config import ExperimentConfig
    from deepseek_ray.report import Reporter
    from deepseek_ray.stages import baseline_stage
    from deepseek_ray.tracking import Tracker

    frame = _reviews(90)
    first = TextPreprocessor(tokenizer="wordpiece", max_len=12, output_dir=tmp_path, seed=0).process(frame)
    test_rows = first.test.rows  # the split depends on the texts and the seed, not on the labels
    frame["label"] = ["pos" if i % 3 else "neg" for i in range(90)]  # two thirds pos ...
    frame.loc[test_rows, "label"] = ["neg" if i % 4 else "pos" for i in range(len(test_rows))]  # ... but test: 3/4 neg
    splits = TextPreprocessor(tokenizer="wordpiece", max_len=12, output_dir=tmp_path, seed=0).process(frame)
    assert set(splits.test.rows) == set(test_rows)
    log = io.StringIO()
    cfg = ExperimentConfig.model_validate({"name": "text-baseline", "data": {"dataset": "rotten_tomatoes"}})
    result = baseline_stage(cfg, splits, Reporter(stream=log), Tracker(enabled=False))
    expected = float((frame.loc[splits.test.rows, "label"] == "pos").mean())  # about 0.25, not the test majority's 0.75
    assert result.description == "majority class: pos" and result.test_score == pytest.approx(expected)
    assert f"majority class: pos: test accuracy={expected:.4f}" in log.getvalue()
