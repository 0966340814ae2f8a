"""Model store throughput against raw AES-256-GCM + SHA-256 on the same bytes, and its memory.

For each size it streams a synthetic model through ``ModelStore.put`` and back through
``ModelStore.read`` (encrypt, hash, fsync'd atomic write; read, decrypt, verify hash), and
times, in the same process, raw AES-256-GCM encryption and decryption plus SHA-256 of the
same bytes with no files, no segmentation and no database. Each size runs in a fresh
process whose resident memory is sampled every 5 ms, so peak growth is the store's own.
The headline is store speed over raw speed at the largest size (1.0 = no overhead).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MiB = 1 << 20
CHUNK = 4 * MiB


class Synthetic(io.RawIOBase):
    """``size`` bytes of incompressible data, generated from one random block (no memory)."""

    def __init__(self, size: int):
        self.left = size
        self.block = os.urandom(CHUNK)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        n = min(len(buffer), self.left)
        view = memoryview(buffer)
        done = 0
        while done < n:
            step = min(n - done, len(self.block))
            view[done : done + step] = self.block[:step]
            done += step
        self.left -= n
        return n


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    def __init__(self) -> None:
        self.base = _rss()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def _raw(size: int) -> float:
    """AES-256-GCM encrypt + decrypt + SHA-256 (write side and read side) of ``size`` bytes."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    source = Synthetic(size)
    buf = bytearray(CHUNK)
    nonce = os.urandom(12)
    started = time.perf_counter()
    write_hash, read_hash = hashlib.sha256(), hashlib.sha256()
    while n := source.readinto(buf):
        data = bytes(buf[:n])
        write_hash.update(data)
        sealed = aead.encrypt(nonce, data, None)
        read_hash.update(aead.decrypt(nonce, sealed, None))
    return time.perf_counter() - started


def _store(size: int, workdir: Path) -> tuple[float, float, float]:
    from fedvault.common.crypto import LocalKeyring
    from fedvault.server.core.db import open_database
    from fedvault.server.store.service import Lineage, ModelStore

    store = ModelStore(
        engine=open_database(f"sqlite:///{workdir / 'bench.db'}"),
        blob_dir=workdir / "blobs",
        kek=LocalKeyring.create(workdir / "keyring.json"),
    )
    started = time.perf_counter()
    version = store.put(
        "bench", io.BufferedReader(Synthetic(size), CHUNK), lineage=Lineage(), creator="bench"
    )
    written = time.perf_counter()
    total = sum(len(chunk) for chunk in store.read("bench", version.version))
    done = time.perf_counter()
    assert total == size
    return done - started, written - started, done - written


def child(size: int) -> None:
    """Measure one size in this (fresh) process and print one JSON line."""
    import fedvault.server.store.service  # noqa: F401  (imports outside the measurement)

    with tempfile.TemporaryDirectory(dir=os.environ.get("FEDVAULT_BENCH_DIR")) as tmp:
        raw_first = _raw(size)
        with PeakRss() as rss:
            store_s, write_s, read_s = _store(size, Path(tmp))
        raw_second = _raw(size)
    print(
        json.dumps(
            {
                "size": size,
                "raw_s": min(raw_first, raw_second),
                "store_s": store_s,
                "write_s": write_s,
                "read_s": read_s,
                "rss_growth": rss.peak - rss.base,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes-mib", type=int, nargs="+", default=[256, 1024], help="model sizes to measure"
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    rows = []
    for mib in args.sizes_mib:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(mib * MiB)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(
        f"{'size':>8} {'raw MiB/s':>10} {'store MiB/s':>12} {'write s':>8} {'read s':>7} "
        f"{'ratio':>6} {'peak RSS +MiB':>14}"
    )
    for r in rows:
        mib = r["size"] / MiB
        print(
            f"{mib:>6.0f}Mi {mib / r['raw_s']:>10.0f} {mib / r['store_s']:>12.0f} "
            f"{r['write_s']:>8.2f} {r['read_s']:>7.2f} {r['raw_s'] / r['store_s']:>6.2f} "
            f"{r['rss_growth'] / MiB:>14.1f}"
        )
    print("raw = AES-256-GCM encrypt + decrypt + SHA-256 twice, in memory, same process")
    print("store = put (hash, encrypt, fsync'd atomic write, DB row) + read (decrypt, verify)")
    largest = rows[-1]
    print(f"RESULT store_vs_raw_speed={largest['raw_s'] / largest['store_s']:.3f}")


if __name__ == "__main__":
    main()
