"""Benchmarks that ``gigaseg bench`` runs: each is a function that returns a JSON-ready dict.

The command line parses its options, calls the function and prints the dict as one JSON
object; the functions can be called directly too. Nothing here is imported eagerly (the
modules import torch, tifffile, ... when used).

``gigaseg bench`` subcommand, its function, what it measures:

- ``step``: :func:`gigaseg.bench.step.bench_step`, one training step (forward, loss,
  backward, Adam), tiled or whole-image, on a synthetic image read from disk;
- ``exactness``: :func:`gigaseg.bench.step.bench_exactness`, the largest relative gradient
  error of tiled vs whole-image autograd over configs, sizes, losses and dtypes;
- ``predict``: :func:`gigaseg.bench.predict.bench_predict`, whole-slide prediction
  throughput, end to end and by part (read, model, write), and peak memory;
- ``store``: :func:`gigaseg.bench.store.bench_store`, tile reads from a region store
  through the dataset views, page cache cold and warm;
- ``prepare``: :func:`gigaseg.bench.store.bench_prepare`, peak memory and speed of
  ``prepare_region`` on one region of a temporary slide;
- ``synth``: :func:`gigaseg.bench.synth.bench_synth`, writing a synthetic slide: speed,
  memory, file sizes.

Benchmarks and experiments that are scripts rather than commands live outside the package,
in ``benchmarks/`` and ``scripts/``.
"""
