"""The results layer: the one place that writes, reads back, draws and prints measured rows.

The measurement (``lwlc.core``) returns plain rows; everything a user then sees of them goes
through here, so ``lwlc analyze``, ``lwlc plot``, ``lwlc merge``, the barrier Callback and
``lwlc.measure(...).plot()`` show one result the same way:

- :mod:`~lwlc.results.files`: result files written atomically, in a fixed order, resumable;
  Ctrl-C and SIGTERM held off while a file is written.
- :mod:`~lwlc.results.readback`: a results folder read back and checked (``--resume``).
- :mod:`~lwlc.results.draw`: which figures a folder gets; drawn by :mod:`~lwlc.results.bars`
  and :mod:`~lwlc.results.heatmaps` in the look of :mod:`~lwlc.results.style`.
- :mod:`~lwlc.results.console`: the tables printed after a measurement.
- :mod:`~lwlc.results.references`: which barrier reference a view shows by default.
- :mod:`~lwlc.results.selection`: the JSON, CSV and figure beside a selected merge.
- :mod:`~lwlc.results.sinks`: publishing to loggers: W&B media (charts, tables, images) and
  TensorBoard images, for the Callback's rows (``lwlc.tracking`` decides what and when).

Submodules import matplotlib, seaborn and pandas only where they draw; importing this package
imports nothing.
"""
