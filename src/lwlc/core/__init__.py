"""The measurement's math, importing only torch: the typed spec every front end takes
(``spec``), layers and groups (``layers``), interpolation paths and their plans
(``interpolation``), the exact engine, its precisions and memory plan (``engine``,
``precision``, ``memory``), BatchNorm calibration, barriers and their metrics, sweeps,
weight-matching alignment, the paper's extra measures (``measures``) and running a spec on two
networks into plain rows (``measurement``)."""
