"""The volumes of the scaling and digest sections: what a swap writes, as a function of a serial.

Every serial gives different content (cfgsup acts on content, not on events), made from random
bytes drawn once, so a swap costs the kubelet's write and not the benchmark's random numbers.
A ConfigMap is at most 1 MiB: the many-key volumes stay at that size; the large files are what
a projected or Secret volume, or a plain directory, can hold.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Callable


@dataclass
class Spec:
    name: str                       # key in run.figures["digest"] and the scaling rows
    label: str
    make: Callable[[int], dict]     # serial -> payload {name: bytes}
    swaps: str                      # which count of run.n applies
    timeout: float                  # longest wait for one signal, seconds


def small(serial: int) -> dict:
    return {"app.conf": f"version {serial} {random.random()}".encode()}


def keys(count: int, size: int) -> Callable[[int], dict]:
    bodies = [os.urandom(size) for _ in range(count)]
    names = [f"key-{i:05d}" for i in range(count)]

    def make(serial: int) -> dict:
        payload = dict(zip(names, bodies))
        payload[names[0]] = b"%016d" % serial + bodies[0][16:]
        return payload
    return make


def blob(size: int) -> Callable[[int], dict]:
    body = os.urandom(size)

    def make(serial: int) -> dict:
        return {"data.bin": b"%016d" % serial + body[16:]}
    return make


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB" if n >= 1024 else f"{n} B"


def volume_specs(smoke: bool) -> list[Spec]:
    """The many-key and large-file volumes, smaller in a smoke run (which measures nothing)."""
    key_counts = (10, 100, 1000) if smoke else (10, 1000, 10000)
    file_sizes = (1 << 10, 1 << 20, 4 << 20) if smoke else (1 << 10, 10 << 20, 100 << 20)
    specs = []
    for count in key_counts:
        size = min(1048, (1 << 20) // count)  # 1000 keys of 1048 B: the 1 MiB ConfigMap
        specs.append(Spec(f"keys-{count}", f"{count} keys of {size} B", _lazy(keys, count, size),
                          "swaps_big" if count >= 10000 else "swaps_mid" if count >= 1000 else "swaps_small",
                          30.0 if count >= 10000 else 10.0))
    for size in file_sizes:
        swaps = "swaps_big" if size >= 100 << 20 else "swaps_mid" if size >= 10 << 20 else "swaps_small"
        specs.append(Spec(f"file-{_size(size).replace(' ', '').lower()}", f"one file of {_size(size)}",
                          _lazy(blob, size), swaps, 60.0 if size >= 100 << 20 else 10.0))
    return specs


def _lazy(factory, *args) -> Callable[[int], dict]:
    """Draw the random bytes only when a section first needs them (100 MiB takes a while)."""
    made = []

    def make(serial: int) -> dict:
        if not made:
            made.append(factory(*args))
        return made[0](serial)
    return make
