"""scikit-learn's 8x8 handwritten digits: embedded, no files, no network."""

import torch
from torch import Tensor

from lwlc.data.base import TensorDataModule

TEST_FRACTION = 0.2
TEST_SEED = 0


class DigitsDataModule(TensorDataModule):
    """The 1797 8x8 grey digit images of scikit-learn (values 0..16), 10 classes.

    The data set has no official test split, so a fixed 20% (fixed seed, independent of
    ``split_seed``) is held out as test; train and val come from the rest.
    """

    name = "digits"
    num_classes = 10
    input_shape = (1, 8, 8)
    # Mean and std of all 1797 images scaled by 1/16.
    mean = (0.30526028624095713,)
    std = (0.3760492217920148,)

    def source(self) -> str:
        return "scikit-learn's embedded copy (sklearn.datasets.load_digits)"

    def _load(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        from sklearn.datasets import load_digits  # seconds (pandas, scipy): only when loaded

        digits = load_digits()
        images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        labels = torch.as_tensor(digits.target, dtype=torch.long)
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(TEST_SEED))
        n_test = round(TEST_FRACTION * len(labels))
        test, train = order[:n_test].sort().values, order[n_test:].sort().values
        return images[train], labels[train], images[test], labels[test]
