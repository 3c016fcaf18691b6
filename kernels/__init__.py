"""Batched torch compute behind the operator boundary.

Kernels take tensors, never single events, and never import the streaming engine. Device choice lives
in :mod:`kernels.device`; timing hooks for metrics in :mod:`kernels.profiling`.
"""
