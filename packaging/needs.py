"""What a bundle needs from the base image: its bootloader's program interpreter and libraries
(the dynamic loader resolves those before the bundle's own library folder is known: libz.so.1
too, though the bundle carries a copy), the libraries its other ELF files name that it does not
carry, libgcc_s.so.1 (glibc loads it to unwind a thread that exits through pthread_exit), and the
newest glibc symbol version any of them asks for.

    python packaging/needs.py BUNDLE_DIR [--write FILE]     prints it, or writes FILE

Reads the ELF files directly (DT_NEEDED and the version-needs section), so no binutils are needed.
"""
from __future__ import annotations

import os
import struct
import sys

SHT_DYNAMIC, SHT_GNU_VERNEED, DT_NEEDED, PT_INTERP = 6, 0x6FFFFFFE, 1, 3
ALWAYS = ("libgcc_s.so.1",)


def _elf_needs(path: str) -> tuple[str, list[str], set[tuple[str, str]]]:
    """(interpreter, DT_NEEDED names, {(library, version)}) of a 64-bit little-endian ELF file."""
    with open(path, "rb") as fh:
        data = fh.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return "", [], set()
    interpreter = ""
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        kind, _flags, offset, _va, _pa, size = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if kind == PT_INTERP:
            interpreter = data[offset:offset + size].rstrip(b"\0").decode("ascii", "replace")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]

    def string(section_index: int, offset: int) -> str:
        start = sections[section_index][4] + offset
        return data[start:data.index(b"\0", start)].decode("ascii", "replace")

    needed, versions = [], set()
    for _name, kind, _flags, _addr, offset, size, link, info, _align, entsize in sections:
        if kind == SHT_DYNAMIC:
            for pos in range(offset, offset + size, entsize or 16):
                tag, value = struct.unpack_from("<qQ", data, pos)
                if tag == DT_NEEDED:
                    needed.append(string(link, value))
        elif kind == SHT_GNU_VERNEED:
            pos = offset
            for _ in range(info):
                _ver, count, file_off, aux, nxt = struct.unpack_from("<HHIII", data, pos)
                library = string(link, file_off)
                apos = pos + aux
                for _ in range(count):
                    _hash, _flg, _other, name_off, anext = struct.unpack_from("<IHHII", data, apos)
                    versions.add((library, string(link, name_off)))
                    apos += anext
                pos += nxt
    return interpreter, needed, versions


def interpreter_of(path: str) -> str:
    """The program interpreter an executable names ("" for a static one)."""
    return _elf_needs(path)[0]


def needs(bundle: str, executable: str = "cfgsup") -> dict:
    """{'interpreter': path, 'libraries': names the base image must provide, 'glibc': 'X.Y'}."""
    interpreter, direct, _ = _elf_needs(os.path.join(bundle, executable))
    carried, needed, versions = set(), set(), set()
    for dirpath, _dirs, files in os.walk(bundle):
        for name in files:
            path = os.path.join(dirpath, name)
            carried.add(name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            try:
                _interp, names, vers = _elf_needs(path)
            except (OSError, struct.error, ValueError, IndexError):
                continue  # not an ELF file we can read: data, scripts
            needed.update(names)
            versions.update(vers)
    glibc = max((tuple(int(p) for p in v[6:].split(".")) for _lib, v in versions
                 if v.startswith("GLIBC_") and v[6:].replace(".", "").isdigit()), default=(2, 0))
    libraries = sorted((set(direct) | (needed - carried) | set(ALWAYS)) - {os.path.basename(interpreter)})
    return {"interpreter": interpreter, "libraries": libraries, "glibc": ".".join(map(str, glibc))}


def render(found: dict) -> str:
    """The NEEDS file: one requirement a line, read by packaging/runtime-libs.sh."""
    lines = ["# what the base image must provide for this bundle (packaging/needs.py)",
             f"glibc {found['glibc']}", f"interpreter {found['interpreter']}"]
    lines += [f"library {name}" for name in found["libraries"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if not argv or not os.path.isdir(argv[0]) or (argv[1:] and (argv[1] != "--write" or len(argv) != 3)):
        print("usage: needs.py BUNDLE_DIR [--write FILE]", file=sys.stderr)
        return 2
    found = needs(argv[0])
    if not found["interpreter"]:
        print(f"needs.py: {argv[0]}/cfgsup is not a dynamically linked 64-bit ELF file", file=sys.stderr)
        return 1
    if len(argv) == 3:
        with open(argv[2], "w") as fh:
            fh.write(render(found))
    print(f"needs from the base image: glibc >= {found['glibc']}, {found['interpreter']}, "
          + " ".join(found["libraries"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
