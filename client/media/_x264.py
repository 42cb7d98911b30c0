"""libx264 without AVX-512: the ``asm`` setting every veil encode passes to x264 so the same
frames give the same bytes on every machine (:func:`x264_asm` says why)."""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import av


class _X264CpuName(ctypes.Structure):
    """An entry of libx264's ``x264_cpu_names`` table (x264.h's ``x264_cpu_name_t``)."""

    _fields_ = (("name", ctypes.c_char_p), ("flags", ctypes.c_uint32))


def _loaded_x264() -> ctypes.CDLL | None:
    """The libx264 this process's libavcodec uses (already loaded with it), or None."""
    paths: set[str] = set()
    try:
        with open("/proc/self/maps") as maps:  # Linux: the library actually mapped
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and "libx264" in fields[5].rsplit("/", 1)[-1]:
                    paths.add(fields[5].strip())
    except OSError:  # not Linux: the copy bundled in PyAV's wheel, if any
        root = Path(av.__file__).parent
        for folder in (root.parent / "av.libs", root / ".dylibs", root):
            if folder.is_dir():
                paths.update(str(p) for p in folder.glob("*x264*") if p.is_file())
    if len(paths) != 1:
        return None
    try:
        return ctypes.CDLL(paths.pop())
    except OSError:
        return None


@functools.cache
def x264_asm() -> str | None:
    """x264's ``asm`` setting for every veil encode: each instruction set x264 detects on
    this CPU except AVX-512 (x264's CPU flags, as a number), or None where x264 detects no
    AVX-512 (its own detection is then left as it is).

    x264's AVX-512 macroblock-tree code (libx264 core 165, the one PyAV 18's wheels bundle)
    reads memory nothing wrote: on an AVX-512 CPU the same frames and settings encoded to
    different bytes depending on what the heap held before (``MALLOC_PERTURB_`` changed
    them; so did the timing of other threads' allocations: 1 job in 4 differed). Its AVX2
    and older code, which x264 keeps bit-exact with each other, does not. The flags are
    x264's own detection minus one bit, never a fixed list: a flag the CPU lacks would make
    x264 run instructions it does not have.
    """
    lib = _loaded_x264()
    if lib is None:
        return None
    try:
        detect = lib.x264_cpu_detect
        table = (_X264CpuName * 128).in_dll(lib, "x264_cpu_names")
    except (AttributeError, ValueError):
        return None
    detect.restype = ctypes.c_uint32
    names: dict[bytes, int] = {}
    for entry in table:  # ends with an entry without flags
        if not entry.flags:
            break
        names[entry.name or b""] = entry.flags
    avx512 = names.get(b"AVX512", 0) & ~names.get(b"AVX2", 0)
    detected = int(detect())
    if not avx512 or not detected & avx512:
        return None
    return str(detected & ~avx512)
