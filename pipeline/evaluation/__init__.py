"""Offline evaluation: detectors on labelled tables (``vigil evaluate tabular``) and severity alignment.

Independent of the engine's streaming runtime and of the demo: it never imports Bytewax or
:mod:`pipeline.demo`.
"""
