"""The measurement's math, importing only torch: layers and groups (``layers``), interpolation
paths (``interpolation``), the exact engine and its memory plan (``engine``, ``memory``),
BatchNorm calibration, barriers, sweeps, weight-matching alignment and the typed spec every
front end takes (``spec``)."""
