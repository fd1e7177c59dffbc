"""lwlc: train pairs of networks and measure layer-wise linear mode connectivity.

``lwlc.measure(model_a, model_b, data, lwlc.MeasureSpec(...))`` measures two networks as
``lwlc analyze`` does; ``lwlc.merge_models`` averages chosen layers as ``lwlc merge`` does;
``lwlc.select_layers`` chooses them within a loss budget (``lwlc merge --groups auto``);
``lwlc.measure_soup`` gives the k-model barrier of a soup per group (``lwlc analyze --soup``);
``lwlc.load_network(path, member="a")`` is one network of a checkpoint as a plain ``nn.Module``.
All are imported on first use, so ``import lwlc`` (and every command) stays light.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = [
    "MeasureSpec",
    "Measurement",
    "Selection",
    "SoupMeasurement",
    "load_network",
    "measure",
    "measure_soup",
    "merge_models",
    "select_layers",
]


def __getattr__(name: str) -> Any:
    """``lwlc.measure``, ``lwlc.merge_models``, ``lwlc.select_layers`` (``Selection``),
    ``lwlc.measure_soup`` (``SoupMeasurement``),
    ``lwlc.MeasureSpec``, ``lwlc.Measurement``, ``lwlc.load_network``."""
    if name in ("measure", "merge_models", "Measurement", "select_layers", "Selection",
                "measure_soup", "SoupMeasurement"):  # fmt: skip
        from lwlc import api

        return getattr(api, name)
    if name == "load_network":
        from lwlc.networks import load_network

        return load_network
    if name == "MeasureSpec":
        from lwlc.core.spec import MeasureSpec

        return MeasureSpec
    raise AttributeError(f"module 'lwlc' has no attribute {name!r}")
