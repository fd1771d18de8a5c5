"""PyInstaller entry point of the bundle: the same as `python -m supervisor`.

PyInstaller's bootloader may point LD_LIBRARY_PATH at the bundle's own libraries; glibc has read
it already, so this process needs it no more, but the app and helpers cfgsup starts would inherit
it and load the bundle's copies of libssl, libz... instead of their image's. Put it back first.
"""
import os
import sys

_orig = os.environ.pop("LD_LIBRARY_PATH_ORIG", None)
if _orig is not None:
    os.environ["LD_LIBRARY_PATH"] = _orig
elif getattr(sys, "frozen", False):
    os.environ.pop("LD_LIBRARY_PATH", None)

from supervisor.start import entry  # noqa: E402 - the environment must be clean first

entry()
