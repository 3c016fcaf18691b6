"""Vigil, the application: the ``vigil`` command line, configuration and secrets.

Subpackages: :mod:`pipeline.engine` (the Bytewax dataflow and its runners, the only package that
imports Bytewax), :mod:`pipeline.evaluation` (offline evaluation) and :mod:`pipeline.demo` (the
synthetic stream, ``vigil demo`` and the embedded broker). The layers are enforced by import-linter
(``[tool.importlinter]`` in pyproject.toml).
"""
