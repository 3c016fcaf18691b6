"""Secrets for client settings: where a value is named, how it is read, and how it stays out of logs.

Secrets never live in the config: ``sasl_password_env`` / ``sasl_password_file`` name where the value
is, and the value is wrapped in :class:`Secret`, whose ``repr`` is masked, so a client library that
logs its settings does not print it either. Both the configuration check (:mod:`pipeline.config`)
and the Kafka client settings (:mod:`pipeline.engine.kafka`) read secrets through this module.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

# librdkafka property names that carry credentials; they may not be set through the pass-through tables.
SECRET_WORDS = ("password", "secret", "token", "oauthbearer.config")


class SecretError(ValueError):
    def __init__(self, message: str, via: str) -> None:
        super().__init__(message)
        self.via = via  # "env" or "file": which config key to blame


class Secret(str):
    """A string whose repr is masked.

    >>> password = Secret("hunter2")
    >>> repr(password), f"{password!r}", password == "hunter2"
    ("'***'", "'***'", True)
    """

    def __repr__(self) -> str:
        return "'***'"


def resolve_secret(env_name: str, file_path: str, environ: Mapping[str, str] | None = None) -> Secret | None:
    """The secret named by an env var or stored in a file (trailing newline dropped), or None."""
    if env_name and file_path:
        raise SecretError("set either the _env or the _file key, not both", "env")
    if env_name:
        value = (os.environ if environ is None else environ).get(env_name)
        if value is None:
            raise SecretError(f"environment variable {env_name} is not set", "env")
        return Secret(value)
    if file_path:
        try:
            return Secret(Path(file_path).read_text().rstrip("\r\n"))
        except OSError as error:
            raise SecretError(f"cannot read {file_path}: {error.strerror}", "file") from None
    return None
