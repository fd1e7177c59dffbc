"""The ``lwlc`` commands, thin over ``lwlc.core`` and ``lwlc.formats``: ``cli`` (the dispatcher,
light), ``lightning_cli`` (``fit``/``validate``/``test``/``predict``, with ``lightning_setup``),
``analyze``, ``merge``, ``plot``, ``experiment``; ``errors`` (one-line argument errors and short
help, imported by every command, never the dispatcher); ``results`` (an analyze results folder,
its resume and interrupts) and ``rundir`` (a fit's folder)."""
