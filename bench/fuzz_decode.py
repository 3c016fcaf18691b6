"""Coverage-guided fuzzing of the wire decoder (atheris, libFuzzer), for a bounded time.

Each input is split into up to four record payloads (on a 0xff byte, which valid UTF-8 never holds) and decoded as one
batch by ``decode_batch`` and record by record by ``decode_event``. The invariant: nothing raises, every record is
exactly one valid event or one dead letter with a reason from ``REASONS``, a detail and its original bytes, and the
batch agrees with the records decoded alone. A finding stops the run, prints the input and writes it to
``<workdir>/crash-<sha1>``, to become a regression ``@example`` in tests/test_fuzz_decode.py.

    make fuzz                                              # installs the fuzz extra, then 60 s
    .venv/bin/python bench/fuzz_decode.py --seconds 300    # the corpus grows in runs/fuzz-decode/corpus

atheris is a binary wheel on Linux x86-64 (``pip install -e '.[fuzz]'``, no compiler needed); without it this
script says how to install it and exits 0.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from the repository

try:
    import atheris
except ImportError:  # pragma: no cover - depends on the environment
    atheris = None

if atheris is not None:
    with atheris.instrument_imports(include=["pipeline.engine.decode", "operators.batch", "operators.event"]):
        import numpy as np

        from operators.event import Event
        from pipeline.engine.decode import _MAX_TS_MS, REASONS, DeadLetter, RecordBatch, decode_batch, decode_event

SEEDS = [
    b'{"key":"host-7","ts":"2026-01-01T00:00:00Z","fields":{"cpu":41.5,"region":"eu"},"label":"spike","group":"web","id":"e"}',
    b'{"key":"a","ts":1767225600000,"fields":{"x":1,"s":"v"}}\xff{"key":"b","ts":-1,"fields":{}}',
    b'{"key":"a","ts":"2026-01-01T01:00:00.250+01:00","fields":{"x":1e999}}\xff[1]\xff{"ts":1}',
    b'{"key":"a","ts":1,"fields":{},"x":[[{"y":null}]]}',
    b"\x02[]",  # nested 128 deep
]
MAX_BYTES = 4096  # half of -max_len: oversized records happen, and nesting deep enough to exhaust the stack


def records_of(data: bytes) -> list[bytes]:
    """The fuzz input as record payloads, split on 0xff. A first byte below 0x20 (never the start of a JSON text) is
    a nesting depth, times 64: the first record then sits that deep in an unknown field, which msgspec skips
    recursively. Mutating bytes alone would not build such depth, as msgspec's C parser gives the fuzzer no coverage."""
    depth = data[0] * 64 if data[:1] and data[0] < 0x20 else 0
    payloads = data[1 if depth else 0 :].split(b"\xff", 3)
    if depth:
        payloads[0] = b'{"key":"a","ts":1,"fields":{},"x":' + b"[" * depth + payloads[0] + b"]" * depth + b"}"
    return payloads


def check(data: bytes) -> None:
    """The invariant on one fuzz input; an AssertionError (or any exception) is a finding."""
    payloads = records_of(data)
    records = RecordBatch("fuzz", 0, np.arange(len(payloads), dtype=np.int64), payloads)
    batch, dead = decode_batch(records, ["x"], ["s"], MAX_BYTES)
    alone = [decode_event(raw, records.position(row), MAX_BYTES) for row, raw in enumerate(payloads)]
    for row, result in enumerate(alone):
        if isinstance(result, DeadLetter):
            assert result.reason in REASONS and result.detail, result
            assert result.original_bytes() == payloads[row] and result.source == records.position(row), result
        else:
            assert isinstance(result, Event) and 1 <= len(result.key) <= 1024 and 0 <= result.ts_ms <= _MAX_TS_MS, result
            assert all(v.__class__ is str or (v.__class__ is float and math.isfinite(v)) for v in result.fields.values())
    good = [e for e in alone if isinstance(e, Event)]
    assert dead == [d for d in alone if isinstance(d, DeadLetter)], (dead, alone)
    assert len(batch) == len(good) and len(batch) + len(dead) == len(payloads)
    assert batch.keys.tolist() == [e.key for e in good] and batch.ts_ms.tolist() == [e.ts_ms for e in good]
    assert batch.offset.tolist() == [e.source.offset for e in good]


# libFuzzer's dictionary: JSON tokens and the event's keys, so that mutations build objects, not just bytes (msgspec's
# C parser is not instrumented; only the Python around it guides the search).
TOKENS = ['"key"', '"ts"', '"fields"', '"label"', '"group"', '"id"', "{", "}", "[", "]", ":", ",", '""', "null", "true",
          "false", "1e999", "-1", "9223372036854775808", "18446744073709551616", "253402300799999", "253402300800000",
          '"2026-01-01T00:00:00Z"', '"9999-12-31T23:59:59.999-00:01"', '"1969-12-31T23:59:59+00:00"', "\\ud800",
          "\\u0000", "[[[[[[[[[[[[[[[["]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="how long to fuzz (default 60)")
    parser.add_argument("--workdir", default="runs/fuzz-decode",
                        help="the corpus (kept between runs), the dictionary and any crash-* inputs go here")
    args, libfuzzer_args = parser.parse_known_args(argv)
    if atheris is None:
        print("fuzz_decode: atheris is not installed; install it with `.venv/bin/pip install -e '.[fuzz]'` "
              "(or `make fuzz`). Nothing fuzzed.", file=sys.stderr)
        return 0
    workdir = Path(args.workdir)
    corpus = workdir / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for number, seed in enumerate(SEEDS):
        check(seed)  # the invariant holds on the seeds before the fuzzer starts from them
        (corpus / f"seed-{number}").write_bytes(seed)
    (workdir / "json.dict").write_text("".join(f"{token}\n" for token in map(_dict_entry, TOKENS)) + '"\\xff"\n')  # the separator
    flags = [sys.argv[0], f"-max_total_time={args.seconds}", "-max_len=8192", "-timeout=10", "-rss_limit_mb=4096",
             f"-artifact_prefix={workdir}/", f"-dict={workdir / 'json.dict'}", "-print_final_stats=1",
             *libfuzzer_args, str(corpus)]
    print(f"fuzz_decode: {args.seconds} s, corpus {corpus}, findings to {workdir}/crash-*", file=sys.stderr)
    atheris.Setup(flags, check)
    atheris.Fuzz()  # exits the process: 0 when the time is up, non-zero with the input on a finding
    return 0


def _dict_entry(token: str) -> str:
    """A libFuzzer dictionary line: the token in double quotes, with quotes and backslashes escaped."""
    return '"' + token.replace("\\", "\\\\").replace('"', '\\"') + '"'


if __name__ == "__main__":
    sys.exit(main())
