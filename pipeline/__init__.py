"""Engine wiring: the Bytewax dataflow, sources, sinks, configuration, CLI and metrics.

This is the only package that imports the streaming engine.
"""
