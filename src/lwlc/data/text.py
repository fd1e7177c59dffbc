"""Character-level language modelling on a text: windows of ids and the ids one step later.

Without a file the corpus is Python's own documentation (the ``pydoc_data`` topics that ship
with every CPython, about 460 KB of English prose and examples): embedded, no download, like
scikit-learn's digits. Any UTF-8 file (e.g. WikiText's raw text) can be given instead.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import torch
from torch import Tensor

from lwlc.core.errors import LwlcError
from lwlc.data.base import TensorDataModule


def python_docs_text() -> str:
    """The text of Python's documentation topics (stdlib ``pydoc_data``), in a fixed order."""
    from pydoc_data.topics import topics

    return "\n".join(topics[key] for key in sorted(topics))


def windows(ids: Tensor, block_size: int, stride: int) -> tuple[Tensor, Tensor]:
    """Every ``block_size`` run of ``ids`` starting at multiples of ``stride``, and its next ids."""
    if len(ids) < block_size + 1:
        raise LwlcError(
            f"the text part has {len(ids)} characters, fewer than block_size + 1 = "
            f"{block_size + 1}; "
            "use a longer text or a smaller block_size"
        )
    w = ids.unfold(0, block_size + 1, stride)
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()


class CharTextDataModule(TensorDataModule):
    """Next-character prediction: inputs ``[N, block_size]`` ids, targets the ids shifted by one.

    The first ``1 - test_fraction`` of the text is cut into training windows (every ``stride``
    characters; ``val_size`` of them are held out as ``val``), the rest into ``test`` windows:
    held-out text the models never saw. The vocabulary is every character of the text, sorted.
    """

    name = "text"
    mean = (0.0,)
    std = (1.0,)

    def __init__(
        self,
        path: str | None = None,
        block_size: int = 128,
        stride: int | None = None,
        test_fraction: float = 0.1,
        max_chars: int | None = None,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        val_size: float = 0.05,
        split_seed: int = 0,
        order_seeds: tuple[int, ...] | list[int] = (0,),
    ) -> None:
        super().__init__(
            batch_size, eval_batch_size, num_workers, val_size, split_seed, order_seeds
        )
        if block_size < 1 or (stride is not None and stride < 1):
            raise LwlcError(f"block_size and stride must be >= 1, got {block_size} and {stride}")
        if not 0 < test_fraction < 1:
            raise LwlcError(
                f"test_fraction is a fraction of the text in (0, 1), got {test_fraction}"
            )
        self.path = path
        self.block_size = block_size
        self.stride = stride or block_size
        self.test_fraction = test_fraction
        self.max_chars = max_chars
        self.input_shape = (block_size,)

    @cached_property
    def text(self) -> str:
        """The corpus (cut to ``max_chars``)."""
        if self.path is None:
            text = python_docs_text()
        else:
            file = Path(self.path)
            if not file.is_file():
                raise LwlcError(f"text file {file} not found: give the path of a UTF-8 text file")
            try:
                text = file.read_text(encoding="utf-8")
            except UnicodeDecodeError as err:
                raise LwlcError(
                    f"{file} is not UTF-8 text ({err.reason} at byte {err.start})"
                ) from None
        return text[: self.max_chars]

    @cached_property
    def vocab(self) -> str:
        """Every distinct character of the text, sorted; a character's id is its position."""
        return "".join(sorted(set(self.text)))

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        """The vocabulary size (the model's ``vocab_size``)."""
        return len(self.vocab)

    def encode(self, text: str) -> Tensor:
        """Character ids of ``text`` (every character must be in the vocabulary)."""
        index = {ch: i for i, ch in enumerate(self.vocab)}
        unknown = sorted(set(text) - index.keys())
        if unknown:
            raise LwlcError(f"characters not in the vocabulary: {''.join(unknown)!r}")
        return torch.tensor([index[ch] for ch in text], dtype=torch.long)

    def decode(self, ids: Tensor) -> str:
        """The text of a sequence of character ids."""
        return "".join(self.vocab[i] for i in ids.tolist())

    def normalise(self, images: Tensor) -> Tensor:
        """Token ids need no normalisation."""
        return images

    def source(self) -> str:
        text = "Python's documentation (pydoc_data.topics)" if self.path is None else self.path
        return f"{text}, {len(self.text)} characters"

    def _load(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        ids = self.encode(self.text)
        cut = round(len(ids) * (1.0 - self.test_fraction))
        train_x, train_y = windows(ids[:cut], self.block_size, self.stride)
        test_x, test_y = windows(ids[cut:], self.block_size, self.block_size)
        return train_x, train_y, test_x, test_y
