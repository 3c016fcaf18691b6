"""The engine: the Bytewax dataflow, sources, sinks, Kafka planning, metrics and the runners.

This is the only package that imports Bytewax. It builds on :mod:`operators`, :mod:`kernels`,
:mod:`pipeline.config` and :mod:`pipeline.secrets`, and never imports the demo, the offline evaluation
or the command line (``pipeline.demo``, ``pipeline.evaluation``, ``pipeline.cli``).
"""
