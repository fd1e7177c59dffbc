"""The ``lwlc`` commands, thin over ``lwlc.core`` and ``lwlc.formats``: ``cli`` (dispatch and
``fit``/``validate``/``test``), ``analyze``, ``merge``, ``plot``, ``experiment``; ``results``
(an analyze results folder, its resume and interrupts) and ``rundir`` (a fit's folder)."""
