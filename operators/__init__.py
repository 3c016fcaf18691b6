"""Online estimators behind the operator boundary (see :mod:`operators.base` for the protocol).

This package never imports the streaming engine.
"""
