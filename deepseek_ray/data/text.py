"""Text preprocessing: de-duplication, a split, training-split augmentation, tokenisation to fixed length.

>>> import pandas as pd
>>> frame = pd.DataFrame({'text': [f'review number {i} was {"good" if i % 2 else "bad"}' for i in range(40)],
...                       'label': ['pos' if i % 2 else 'neg' for i in range(40)]})
>>> import tempfile
>>> pre = TextPreprocessor(tokenizer='wordpiece', max_len=8, augmentation=['random_swap'],
...                        output_dir=tempfile.mkdtemp())
>>> splits = pre.process(frame)
>>> splits.train.x.shape, splits.train.x.dtype, len(splits.test)   # 32 rows + one swapped copy of each
(torch.Size([64, 8]), torch.int64, 4)
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..config import TEXT_AUGMENTATIONS, TRAINED_TOKENIZERS, text_augmentation
from ..config.schema import BackTranslationConfig, RandomDeletionConfig, RandomSwapConfig, SynonymReplacementConfig
from ..files import fingerprint
from .datasets import (
    FILE_SUFFIXES,
    ArrayDataset,
    DatasetSplits,
    Table,
    encode_labels,
    read_table,
    require_columns,
    sample_rows,
    split_indices,
)
from .kinds import BadRequest, DataKind, RequestParser, one_or_many, register_kind, shape_text

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # [PAD] first: pad id 0
AUGMENTATIONS = TEXT_AUGMENTATIONS  # the schema's augmentation classes are the list; build_augmenter maps each
CACHE = Path(os.environ.get("DEEPSEEK_RAY_CACHE", Path.home() / ".cache" / "deepseek_ray"))


# ------------------------------------------------------------------------------------- wordnet
# The 45 lexicographer files of WordNet 3.0 (Debian's package omits this list, which NLTK needs).
_LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive "
    "noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity "
    "noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change verb.cognition "
    "verb.communication verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion "
    "verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
_LEX_CATEGORY = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}


def wordnet(debian_dir: str | Path = "/usr/share/wordnet"):
    """NLTK's WordNet reader: NLTK's own data if installed, else Debian's ``wordnet-base`` files
    (copied once into an NLTK data folder, with the ``lexnames`` file Debian leaves out).

    >>> 'good' in {l.name() for s in wordnet().synsets('good') for l in s.lemmas()}
    True
    """
    import nltk
    from nltk.corpus import wordnet as reader

    try:
        reader.ensure_loaded()
        return reader
    except LookupError:
        pass
    source = Path(debian_dir)
    if not (source / "data.noun").is_file():
        raise LookupError(
            "synonym_replacement needs WordNet: `apt-get install wordnet-base wordnet-sense-index` "
            "(or scripts/install_system_deps.sh), or `python -c \"import nltk; nltk.download('wordnet')\"`"
        )
    data_dir = CACHE / "nltk_data"
    _install_debian_wordnet(source, data_dir / "corpora" / "wordnet")
    nltk.data.path.append(str(data_dir))  # NLTK reads only from its data path
    reader.ensure_loaded()
    return reader


def _install_debian_wordnet(source: Path, target: Path) -> None:
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    target.mkdir(parents=True, exist_ok=True)
    for name in WordNetCorpusReader._FILES:
        if (source / name).is_file() and not (target / name).exists():
            shutil.copyfile(source / name, target / name)
    (target / "lexnames").write_text(
        "".join(f"{i:02d}\t{name}\t{_LEX_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(_LEXNAMES))
    )


# -------------------------------------------------------------------------------- augmentations
TextAugmenter = Callable[[list[str], random.Random], list[str]]


def synonym_replacement(p: float = 0.1) -> TextAugmenter:
    """Replace ``max(1, p·n)`` of ``n`` words with a WordNet synonym (EDA, Wei & Zou 2019).

    Like every augmenter it maps a list of texts; here ``max(1, int(0.5·3))`` = 1 word changes, and
    ``'a'`` never does (words of one or two letters are kept):

    >>> synonym_replacement(0.5)(['a good movie'], random.Random(0))
    ['a skillful movie']
    """

    return _word_edit(lambda words, rng: _replace_synonyms(words, p, rng))


def _word_edit(edit: Callable[[list[str], random.Random], list[str]]) -> TextAugmenter:
    """The augmenter that applies ``edit`` to the words of each text."""

    def apply(texts: list[str], rng: random.Random) -> list[str]:
        return [" ".join(edit(text.split(), rng)) for text in texts]

    return apply


def _replace_synonyms(words: list[str], p: float, rng: random.Random) -> list[str]:
    candidates = [i for i, w in enumerate(words) if w.isalpha() and len(w) > 2]
    rng.shuffle(candidates)
    wanted, replaced = max(1, int(p * len(words))), 0
    for i in candidates:
        lemmas = {lemma.name().replace("_", " ") for s in wordnet().synsets(words[i].lower()) for lemma in s.lemmas()}
        lemmas.discard(words[i].lower())
        if lemmas:
            words[i] = rng.choice(sorted(lemmas))
            replaced += 1
        if replaced == wanted:
            break
    return words


def random_swap(p: float = 0.1) -> TextAugmenter:
    """Swap two random words, ``max(1, p·n)`` times.

    >>> random_swap(0.1)(['one two three'], random.Random(0))
    ['one three two']
    """

    def swap(words: list[str], rng: random.Random) -> list[str]:
        for _ in range(max(1, int(p * len(words))) if len(words) > 1 else 0):
            i, j = rng.sample(range(len(words)), 2)
            words[i], words[j] = words[j], words[i]
        return words

    return _word_edit(swap)


def random_deletion(p: float = 0.1) -> TextAugmenter:
    """Drop each word with probability ``p`` (keeping at least one).

    >>> random_deletion(0.5)(['one two three four'], random.Random(1))
    ['two three']
    """

    def delete(words: list[str], rng: random.Random) -> list[str]:
        kept = [w for w in words if rng.random() >= p]
        return kept if kept or not words else [rng.choice(words)]

    return _word_edit(delete)


@dataclass
class BackTranslation:
    """Translate to a pivot language and back with two MarianMT models (local folders or hub names).

    >>> BackTranslation('Helsinki-NLP/opus-mt-en-de', 'Helsinki-NLP/opus-mt-de-en')  # hub models  # doctest: +SKIP
    """

    forward: str = "Helsinki-NLP/opus-mt-en-de"
    backward: str = "Helsinki-NLP/opus-mt-de-en"
    max_new_tokens: int = 64
    batch_size: int = 16

    def __post_init__(self) -> None:
        self._pairs = [_load_seq2seq(self.forward, "forward"), _load_seq2seq(self.backward, "backward")]

    def __call__(self, texts: list[str], rng: random.Random) -> list[str]:
        import torch

        torch.manual_seed(rng.randrange(2**31))  # sampling makes each copy differ, seeded by rng
        for tokenizer, model in self._pairs:
            texts = [
                out
                for start in range(0, len(texts), self.batch_size)
                for out in self._translate(tokenizer, model, texts[start : start + self.batch_size])
            ]
        return texts

    def _translate(self, tokenizer: Any, model: Any, texts: list[str]) -> list[str]:
        import torch

        batch = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_new_tokens)
        with torch.no_grad():
            generated = model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=True, top_k=20)
        return [
            t.strip() or s
            for t, s in zip(tokenizer.batch_decode(generated, skip_special_tokens=True), texts, strict=True)
        ]


def _load_seq2seq(name: str, which: str) -> tuple[Any, Any]:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name), AutoModelForSeq2SeqLM.from_pretrained(name).eval()
    except OSError as err:
        raise ValueError(
            f"back_translation.{which}: cannot load {name!r} ({str(err).splitlines()[0][:200]}); "
            "pass a local MarianMT folder (save_pretrained) or a reachable hub name"
        ) from None


def build_augmenter(spec: str | dict[str, Any], p: float) -> TextAugmenter:
    """One augmenter from a name or ``{'type': name, ...options}``.

    >>> build_augmenter('random_swap', 0.1) is not None
    True
    >>> build_augmenter('shout', 0.1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: augmentation: unknown 'shout'; allowed: synonym_replacement, random_swap, ...
    """
    config = text_augmentation(spec)  # the experiment file's classes, checks and messages
    if isinstance(config, BackTranslationConfig):
        return BackTranslation(**config.model_dump(exclude={"type"}))
    word_edit = {
        SynonymReplacementConfig: synonym_replacement,
        RandomSwapConfig: random_swap,
        RandomDeletionConfig: random_deletion,
    }[type(config)]
    return word_edit(p if config.p is None else config.p)


# ----------------------------------------------------------------------------------- tokenizers
# data.text.tokenizer's trained kinds: each gives an untrained tokenizer and its trainer.
@TRAINED_TOKENIZERS.register("wordpiece")
def _wordpiece(vocab_size: int) -> tuple[Any, Any]:
    from tokenizers import Tokenizer, decoders, models, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.decoder = decoders.WordPiece()
    return tokenizer, trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False
    )


@TRAINED_TOKENIZERS.register("bpe")
def _bpe(vocab_size: int) -> tuple[Any, Any]:
    from tokenizers import Tokenizer, decoders, models, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.decoder = decoders.BPEDecoder()
    return tokenizer, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)


def train_tokenizer(texts: Iterable[str], kind: str, vocab_size: int = 8000):
    """A ``bpe`` or ``wordpiece`` tokenizer (lower-cased, [PAD] = 0) trained on ``texts``.

    >>> tok = train_tokenizer(['a tiny corpus', 'a tiny test'], 'wordpiece', vocab_size=60)
    >>> tok.token_to_id('[PAD]'), tok.encode('a tiny test').tokens
    (0, ['a', 'tiny', 'test'])
    """
    from tokenizers import normalizers, pre_tokenizers

    tokenizer, trainer = TRAINED_TOKENIZERS[kind](vocab_size)
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def load_tokenizer(name_or_path: str | Path):
    """A Hugging Face fast tokenizer from a folder, a ``tokenizer.json`` file, or a hub name; offline,
    a hub name is an error that says what to pass instead."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from ..files import resolve_pretrained

    name_or_path = resolve_pretrained(name_or_path)  # 'all-MiniLM-L6-v2': the packaged encoder's tokenizer
    path = Path(name_or_path)
    if path.is_file():
        return PreTrainedTokenizerFast(tokenizer_file=str(path), pad_token="[PAD]", unk_token="[UNK]")
    try:
        return AutoTokenizer.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as err:
        raise ValueError(
            f"tokenizer: cannot load {str(name_or_path)!r}: not a local folder, and the Hugging Face hub did not "
            f"provide it ({str(err).splitlines()[0][:160]}). Pass a local tokenizer folder (save_pretrained), "
            f"or tokenizer='wordpiece' / 'bpe' to train one on the training text"
        ) from None


def encode_texts(tokenizer: Any, texts: list[str], max_len: int, dtype: Any = np.int64) -> np.ndarray:
    """Token ids ``(N, max_len)`` of ``texts``, truncated and padded to ``max_len`` (training and serving alike).

    >>> from transformers import PreTrainedTokenizerFast
    >>> trained = train_tokenizer(['a b c', 'b c d'], 'wordpiece', 100)
    >>> tok = PreTrainedTokenizerFast(tokenizer_object=trained, pad_token='[PAD]')
    >>> encode_texts(tok, ['a b', 'c'], 4).tolist()
    [[5, 6, 0, 0], [7, 0, 0, 0]]
    """
    batch = tokenizer(texts, truncation=True, padding="max_length", max_length=max_len)
    return np.asarray(batch["input_ids"], dtype=dtype).reshape(len(texts), max_len)


# -------------------------------------------------------------------------------- the pipeline
def ensure_pad_token(tokenizer: Any) -> Any:
    """Give a tokenizer without a pad token (e.g. GPT-2's) one it already has: its end or unknown token.

    >>> class Tok: pad_token, eos_token, unk_token = None, '</s>', '<unk>'
    >>> ensure_pad_token(Tok()).pad_token
    '</s>'
    """
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


class TextPreprocessor:
    """Raw labelled text → train/val/test token ids, with everything fitted on the training split.

    ``tokenizer``: a local Hugging Face folder, a hub name, or ``'bpe'`` / ``'wordpiece'`` to train one
    on the training text (saved beside the data, or in ``output_dir``). ``augmentation``: names or
    ``{'type': ..., ...}`` dicts from :data:`AUGMENTATIONS`; each adds ``copies`` altered copies of every
    training row, changing about a fraction ``p`` of its words. Val and test are never augmented.
    Exact duplicate texts are dropped before splitting, so no text is in two splits.

    The promised call, skipped here: its tokenizer and translation models come from the hub, and
    ``raw_data.csv`` is the user's file.

    >>> pre = TextPreprocessor(tokenizer='bert-base-uncased', max_len=512,
    ...                        augmentation=['synonym_replacement', 'back_translation'])  # doctest: +SKIP
    >>> dataset = pre.process('raw_data.csv')                                             # doctest: +SKIP
    """

    def __init__(
        self,
        tokenizer: str = "wordpiece",
        max_len: int = 128,
        augmentation: Iterable[str | dict[str, Any]] = (),
        *,
        p: float = 0.1,
        copies: int = 1,
        split: tuple[float, float, float] = (0.8, 0.1, 0.1),
        seed: int = 0,
        text_column: str = "text",
        label_column: str = "label",
        vocab_size: int = 8000,
        output_dir: str | Path | None = None,
        deduplicate: bool = True,
    ):
        if max_len < 2:
            raise ValueError(f"max_len must be ≥ 2, got {max_len}")
        if not 0 <= p <= 1 or copies < 0:
            raise ValueError(f"p must be in [0, 1] and copies ≥ 0, got p={p}, copies={copies}")
        self.tokenizer_name, self.max_len = str(tokenizer), max_len
        self.augmentation = list(augmentation)
        self.augmenters = [build_augmenter(spec, p) for spec in self.augmentation]
        self.p, self.copies, self.split, self.seed = p, copies, split, seed
        self.text_column, self.label_column, self.vocab_size = text_column, label_column, vocab_size
        self.output_dir, self.deduplicate = output_dir, deduplicate
        self.tokenizer: Any = None  # set by fit_tokenizer
        self.tokenizer_path: str | None = None

    def split_rows(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, tuple[np.ndarray, ...]]:
        """The rows :meth:`process` keeps (labelled, de-duplicated) and its train/val/test indices into them:
        the held-out texts as they were, e.g. to replay them to a served model.

        >>> frame = pd.DataFrame({'text': ['a', 'b', 'B ', 'c'], 'label': ['x', 'y', 'y', 'x']})
        >>> rows, (train, val, test) = TextPreprocessor(split=(0.34, 0.33, 0.33)).split_rows(frame)
        >>> len(rows), len(train) + len(val) + len(test)
        (3, 3)
        """
        require_columns(frame, [self.text_column, self.label_column], key="text_column/label_column")
        frame = frame[[self.text_column, self.label_column]].dropna()
        if self.deduplicate:
            frame = frame[~frame[self.text_column].str.strip().str.lower().duplicated()]
        frame = frame.reset_index(drop=True)
        return frame, split_indices(len(frame), self.split, self.seed)

    def process(self, source: str | Path | pd.DataFrame, name: str | None = None) -> DatasetSplits:
        """Read ``source`` (CSV/Parquet/JSONL or a frame), split, augment the training split, tokenise."""
        frame, parts = self.split_rows(read_table(source) if not isinstance(source, pd.DataFrame) else source)
        texts = frame[self.text_column].astype(str).tolist()
        y, labels = encode_labels(frame[self.label_column].astype(str))
        train_texts, train_y, train_rows = self.augment([texts[i] for i in parts[0]], y[parts[0]], parts[0])
        self.fit_tokenizer(train_texts, source)
        encoded = [self.encode(train_texts)] + [self.encode([texts[i] for i in idx]) for idx in parts[1:]]
        train = ArrayDataset(encoded[0], train_y, train_rows)
        val, test = (ArrayDataset(x, y[idx], idx) for x, idx in zip(encoded[1:], parts[1:], strict=True))
        preprocessing = {
            "type": "text",
            "task": "classification",
            "tokenizer": self.tokenizer_path,
            "max_len": self.max_len,
            "pad_id": int(self.tokenizer.pad_token_id),
            "vocab_size": len(self.tokenizer),
            "augmentation": [str(a) for a in self.augmentation],
            "copies": self.copies,
            "p": self.p,
        }
        name = name or ("frame" if isinstance(source, pd.DataFrame) else Path(source).stem)
        return DatasetSplits(
            name,
            train,
            val,
            test,
            labels=labels,
            input_shape=(self.max_len,),
            preprocessing=preprocessing,
            fingerprint=fingerprint(encoded[0], *parts),
            kind=TextKind(),
        )

    def augment(self, texts: list[str], y: np.ndarray, rows: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
        """The training rows plus ``copies`` altered copies per augmenter; each copy keeps its source row."""
        rng = random.Random(self.seed)
        out_texts, out_y, out_rows = list(texts), [y], [rows]
        for augmenter in self.augmenters:
            for _ in range(self.copies):
                out_texts += augmenter(texts, rng)
                out_y.append(y)
                out_rows.append(rows)
        return out_texts, np.concatenate(out_y), np.concatenate(out_rows)

    def fit_tokenizer(self, train_texts: list[str], source: Any) -> None:
        """Load the named tokenizer, or train ``bpe``/``wordpiece`` on the training texts and save it."""
        from transformers import PreTrainedTokenizerFast

        if self.tokenizer_name not in TRAINED_TOKENIZERS:
            self.tokenizer, self.tokenizer_path = load_tokenizer(self.tokenizer_name), self.tokenizer_name
            ensure_pad_token(self.tokenizer)
            return
        trained = train_tokenizer(train_texts, self.tokenizer_name, self.vocab_size)
        path = self._tokenizer_file(train_texts, source)
        path.parent.mkdir(parents=True, exist_ok=True)
        trained.save(str(path))
        self.tokenizer = PreTrainedTokenizerFast(tokenizer_object=trained, pad_token="[PAD]", unk_token="[UNK]")
        self.tokenizer_path = str(path)

    def _tokenizer_file(self, train_texts: list[str], source: Any) -> Path:
        digest = hashlib.sha256("\n".join(train_texts).encode()).hexdigest()[:12]
        stem = f"{self.tokenizer_name}-{self.vocab_size}-{digest}.tokenizer.json"
        if self.output_dir is not None:
            return Path(self.output_dir) / stem
        if isinstance(source, (str, Path)):
            return Path(source).with_name(f"{Path(source).stem}.{stem}")
        return CACHE / "tokenizers" / stem

    def encode(self, texts: list[str]) -> np.ndarray:
        """Token ids ``(N, max_len)`` int64, truncated and padded to ``max_len``."""
        if self.tokenizer is None:
            raise RuntimeError("call process() first, or set .tokenizer")
        return encode_texts(self.tokenizer, texts, self.max_len)


# ----------------------------------------------------------------------------------- the kind
class TextRequestParser(RequestParser):
    """A string or a list of strings (tokenised with the tokenizer saved beside the model), or token ids:
    integers in ``[0, vocab_size)``, at most ``max_len`` per example, padded with the pad id.

    >>> parse = TextRequestParser((4,), np.int64, {'vocab_size': 10, 'pad_id': 0, 'max_len': 4})
    >>> parse([5, 6]).tolist(), parse.accepts_text
    ([[5, 6, 0, 0]], False)
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        name = self.spec.get("tokenizer")
        self.tokenizer = None
        if name and self.export_dir is not None:
            self.tokenizer = ensure_pad_token(load_tokenizer(self.export_dir / name))

    @property
    def accepts_text(self) -> bool:
        return self.tokenizer is not None

    def __call__(self, inputs: Any) -> np.ndarray:
        texts = one_or_many(inputs, str)
        return self.token_ids(inputs) if texts is None else self.texts(texts)

    def texts(self, texts: list[str]) -> np.ndarray:
        if self.tokenizer is None:
            raise BadRequest(
                "this model takes token ids (its export folder holds no tokenizer): "
                f'send {{"inputs": [<up to {self.example_shape[0]} integers>]}}'
            )
        return encode_texts(self.tokenizer, texts, self.example_shape[0], self.dtype)

    def token_ids(self, inputs: Any) -> np.ndarray:
        rows = one_or_many(inputs, list) or [inputs]
        max_len, vocab = self.example_shape[0], int(self.spec.get("vocab_size", 2**31))
        raw = "a string or a list of strings, or " if self.tokenizer is not None else ""
        out = np.full((len(rows), max_len), int(self.spec.get("pad_id", 0)), dtype=self.dtype)
        for i, row in enumerate(rows):
            if (
                not isinstance(row, list)
                or not row
                or not all(isinstance(t, int) and not isinstance(t, bool) for t in row)
            ):
                raise BadRequest(f'"inputs" must be {raw}token ids: a list of integers, or a list of such lists')
            if len(row) > max_len:
                raise BadRequest(f'"inputs" example {i} has {len(row)} token ids; the model takes at most {max_len}')
            if min(row) < 0 or max(row) >= vocab:
                raise BadRequest(f'"inputs" example {i}: token ids must be in [0, {vocab}), got {min(row)}…{max(row)}')
            out[i, : len(row)] = row
        return out


@register_kind("text")
class TextKind(DataKind):
    """Loaders return a :class:`Table` with a ``text`` column; options are :class:`TextPreprocessor`'s
    (``tokenizer``, ``max_len``, ``augmentation``, …). The baseline is the training split's majority class."""

    parser = TextRequestParser

    def split(
        self,
        name: str,
        raw: Table,
        fractions: tuple[float, float, float],
        seed: int,
        limit: int | None = None,
        **options: Any,
    ) -> DatasetSplits:
        features = [c for c in raw.frame.columns if c != raw.label]
        # The text is the `text` column, or a file's one other column whatever its name.
        text_column = "text" if "text" in features or len(features) != 1 else features[0]
        defaults: dict[str, Any] = {"tokenizer": "wordpiece", "max_len": 64, "text_column": text_column}
        if Path(name).suffix in FILE_SUFFIXES:
            defaults["output_dir"] = Path(name).parent  # a trained tokenizer is saved beside the data
        preprocessor = TextPreprocessor(**{**defaults, **options}, split=fractions, seed=seed, label_column=raw.label)
        return preprocessor.process(sample_rows(raw.frame, limit, seed), name=name)

    def model_inputs(self, data: DatasetSplits) -> dict[str, Any]:
        prep = data.preprocessing
        inputs = {"vocab_size": prep["vocab_size"], "num_classes": data.num_classes, "max_len": data.input_shape[0]}
        pad_id = prep.get("pad_id", 0)
        return inputs | ({"pad_id": pad_id} if pad_id else {})

    def input_spec(self, data: DatasetSplits, export_dir: Path | None = None) -> dict[str, Any]:
        """``max_len``, ``pad_id``, ``vocab_size``, and the tokenizer copied into ``export_dir`` (so that a
        replica takes raw strings)."""
        prep = data.preprocessing
        tokenizer = save_tokenizer(prep.get("tokenizer"), export_dir) if export_dir is not None else None
        return {
            "max_len": prep["max_len"],
            "pad_id": prep.get("pad_id", 0),
            "vocab_size": prep["vocab_size"],
            "tokenizer": tokenizer,
        }

    def example_input(self, meta: dict[str, Any], count: int = 2) -> torch.Tensor:
        generator = torch.Generator().manual_seed(int(meta.get("seed", 0)))
        vocab = int((meta.get("preprocessing") or {}).get("vocab_size", 100))
        return torch.randint(1, vocab, (count, *meta["input_shape"]), generator=generator)

    def tensor_metadata(self, meta: dict[str, Any], dtype: Any) -> list[dict[str, Any]]:
        """Token ids (``INT64``), and raw strings (``BYTES``, one per example) where a tokenizer was exported."""
        tensors = super().tensor_metadata(meta, dtype)
        if (meta.get("input_spec") or {}).get("tokenizer"):
            tensors.append({"name": "text", "datatype": "BYTES", "shape": [-1]})
        return tensors

    def request_hint(self, meta: dict[str, Any]) -> str:
        shape = shape_text(meta)
        raw = "a string or a list of strings, or " if (meta.get("input_spec") or {}).get("tokenizer") else ""
        return f'{{"inputs": {raw}<{shape} token ids>}}'


def save_tokenizer(source: str | None, export_dir: Path) -> str | None:
    """Put the text tokenizer beside an exported model, so the endpoint can take raw strings; returns its
    name relative to ``export_dir`` (``None`` when there is no tokenizer)."""
    if not source:
        return None
    source_path = Path(source)
    if source_path.is_file():  # a trained wordpiece/bpe tokenizer.json, or a user's file
        shutil.copyfile(source_path, export_dir / "tokenizer.json")
        return "tokenizer.json"
    target = export_dir / "tokenizer"
    if target.exists():
        shutil.rmtree(target)
    load_tokenizer(source).save_pretrained(str(target))  # a local folder or a hub name: a self-contained copy
    return "tokenizer"
