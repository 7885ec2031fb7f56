"""A kind of data registered from outside the package, as a plugin would: bit strings such as ``"0110…"``.

Importing this module registers the kind ``bitstring`` and the dataset ``toy_bits`` (label: whether more
than half of the bits are set). Its requests are strings of bits, parsed by its own :class:`BitsParser`; Ray
workers and Serve replicas import it by the path the export metadata records (``tests.toy_kind``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from deepseek_ray.data import (
    ArrayDataset,
    BadRequest,
    DataKind,
    DatasetSplits,
    RequestParser,
    Table,
    one_or_many,
    register_dataset,
    register_kind,
    split_indices,
)

BITS = 12


class BitsParser(RequestParser):
    """A string of ``0``/``1`` (or a list of them) → one float row per string; numbers pass as usual."""

    def __call__(self, inputs: Any) -> np.ndarray:
        texts = one_or_many(inputs, str)
        if texts is None:
            return self.numbers(inputs)
        width = self.example_shape[0]
        if any(len(t) != width or set(t) - {"0", "1"} for t in texts):
            raise BadRequest(f'"inputs" must be strings of {width} bits (0 or 1)')
        return np.array([[float(c) for c in t] for t in texts], dtype=self.dtype)


@register_kind("bitstring")
class BitStringKind(DataKind):
    """Bit strings in a ``bits`` column; the model sees one float per bit."""

    parser = BitsParser

    def split(self, name: str, raw: Table, fractions: tuple[float, float, float], seed: int, limit: int | None = None,
              **options: Any) -> DatasetSplits:
        x = np.array([[float(c) for c in bits] for bits in raw.frame["bits"]], dtype=np.float32)
        labels = sorted(raw.frame[raw.label].unique())
        y = np.array([labels.index(v) for v in raw.frame[raw.label]])
        parts = split_indices(len(x), fractions, seed)
        return DatasetSplits(name, *(ArrayDataset(x[idx], y[idx], idx) for idx in parts), labels=labels,
                             input_shape=(x.shape[1],), kind=self)

    def model_inputs(self, data: DatasetSplits) -> dict[str, Any]:
        return {"in_features": data.input_shape[0], "num_classes": data.num_classes}

    def request_hint(self, meta: dict[str, Any]) -> str:
        return f'{{"inputs": "<{meta["input_shape"][0]} bits>"}}'


@register_dataset("toy_bits", kind="bitstring")
def toy_bits() -> Table:
    bits = np.random.default_rng(0).integers(0, 2, size=(400, BITS))
    frame = pd.DataFrame({"bits": ["".join(map(str, row)) for row in bits],
                          "label": np.where(bits.sum(1) > BITS // 2, "many", "few")})
    return Table(frame, "label")
