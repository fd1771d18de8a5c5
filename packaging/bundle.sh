#!/usr/bin/env bash
# Build cfgsup as a PyInstaller one-directory bundle:
#   dist/cfgsup/cfgsup                         the executable (no Python needed on the target)
#   dist/cfgsup/NEEDS                          what the target image must provide (glibc, libz...)
#   dist/cfgsup-VERSION-linux-ARCH.tar.gz      the same directory, packed
# A fresh build venv gets PyInstaller (from PyPI) and cfgsup from this checkout.
#   PYTHON  interpreter to build with (default python3); it needs a shared libpython
#   DIST    output folder (default dist);  BUILD  scratch folder (default build)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DIST=${DIST:-dist}
BUILD=${BUILD:-build}
VENV=$BUILD/bundle-venv
WORK=$BUILD/pyinstaller

rm -rf "$VENV" "$WORK" "$DIST/cfgsup"
mkdir -p "$DIST"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q 'pyinstaller>=6.10,<7' .

# cfgsup imports lazily and its modules change: collect whole packages, never a list of today's
# imports. Third-party packages cfgsup uses, and the stdlib packages its lazy imports reach
# (inotify readers on ctypes, selectors-based servers, socket-level clients, JSON logs).
packages=(supervisor click watchdog psutil xxhash prometheus_client http json urllib email)
modules=(ctypes ctypes.util selectors socketserver ssl select resource fcntl termios shlex
         fnmatch struct hashlib hmac base64 secrets ipaddress queue threading errno signal socket)
# Test suites and build tools that whole packages would drag in (psutil.tests; setuptools through
# its own runtime hook; ctypes.test, hence ctypes is listed by module, imports tkinter and X11).
excluded=(test unittest tkinter _tkinter psutil.tests setuptools pkg_resources distutils lib2to3
          pydoc pip)
args=()
for p in "${packages[@]}"; do args+=(--collect-submodules "$p"); done
for m in "${modules[@]}"; do args+=(--hidden-import "$m"); done
for x in "${excluded[@]}"; do args+=(--exclude-module "$x"); done
if command -v strip >/dev/null; then args+=(--strip); fi

"$VENV/bin/pyinstaller" --noconfirm --clean --log-level ERROR --onedir --name cfgsup \
  --distpath "$DIST" --workpath "$WORK" --specpath "$WORK" \
  --runtime-hook packaging/rthook_signals.py \
  --copy-metadata cfgsup "${args[@]}" packaging/entry.py

chmod -R a+rX "$DIST/cfgsup"  # any uid runs it, whatever the umask was
"$DIST/cfgsup/cfgsup" --version >/dev/null  # the bundle starts, and finds its own metadata
"$VENV/bin/python" packaging/needs.py "$DIST/cfgsup" --write "$DIST/cfgsup/NEEDS"
version=$("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("cfgsup"))')
tarball="$DIST/cfgsup-$version-linux-$(uname -m).tar.gz"
tar -C "$DIST" -czf "$tarball" --owner=0 --group=0 cfgsup
echo "built $DIST/cfgsup/cfgsup and $tarball"
