"""The barrier Callback's parts: when to evaluate, what it measures during training, its history,
the files it writes and what it publishes to loggers (``lwlc.callbacks`` puts them together)."""
