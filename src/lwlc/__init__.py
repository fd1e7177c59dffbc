"""lwlc: train pairs of networks and measure layer-wise linear mode connectivity."""

__version__ = "0.1.0"
