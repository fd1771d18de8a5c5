"""A faithful re-enactment of the kubelet's AtomicWriter (pkg/volume/util/atomic_writer.go), the
way ConfigMap, Secret, projected and downwardAPI volumes are updated:

1. an unchanged payload writes nothing at all;
2. a new `..YYYY_MM_DD_HH_MM_SS.<random>` dir (UTC, mode 0755) receives the files, nested item
   paths as real subdirectories, with the item mode (default 0644);
3. `..data_tmp -> <new dir>` is created and renamed over `..data` (the atomic commit);
4. top-level links `key -> ..data/key` are created for new keys and removed for dropped ones;
5. the old payload dir is removed.

With `fs_group` (the pod's `securityContext.fsGroup`) it also does what the kubelet's
SetVolumeOwnership does before the commit: every file and directory of the volume (links are
skipped) gets that group; files gain 0440, directories 0550 and setgid (the read-only mask
ConfigMap and Secret volumes use). `root_mode` is the mode of the volume directory itself: the
kubelet's is 0777 (it is an emptyDir underneath), 02777 with fsGroup.
"""
from __future__ import annotations

import os
import random
import shutil
import time


class KubeletVolume:
    def __init__(self, path: str, payload: dict[str, bytes] | None = None, mode: int = 0o644,
                 modes: dict[str, int] | None = None, fs_group: int | None = None,
                 root_mode: int | None = None):
        self.path = str(path)
        self.mode = mode
        self.modes = dict(modes or {})  # item modes by path; `mode` (defaultMode) for the rest
        self.fs_group = fs_group
        os.makedirs(self.path, exist_ok=True)
        if root_mode is not None:
            os.chmod(self.path, root_mode)
        if fs_group is not None:
            os.chown(self.path, -1, fs_group)
            os.chmod(self.path, os.stat(self.path).st_mode & 0o7777 | 0o2770)
        self.swaps = 0
        self.committed_at = 0.0
        if payload is not None:
            self.write(payload)

    def current(self) -> dict[str, bytes]:
        data = os.path.join(self.path, "..data")
        if not os.path.islink(data):
            return {}
        base = os.path.join(self.path, os.readlink(data))
        found = {}
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                full = os.path.join(dirpath, name)
                with open(full, "rb") as fh:
                    found[os.path.relpath(full, base)] = fh.read()
        return found

    def write(self, payload: dict[str, bytes]) -> bool:
        """Apply a payload {relative path: bytes}; returns False when nothing had to be written."""
        payload = {k: (v.encode() if isinstance(v, str) else v) for k, v in payload.items()}
        if payload == self.current():
            return False  # 1. the kubelet writes nothing for an unchanged payload
        data_link = os.path.join(self.path, "..data")
        old_dir = os.readlink(data_link) if os.path.islink(data_link) else None
        old_top = {k.split("/")[0] for k in self.current()}
        # 2. the new timestamped payload dir
        stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime())
        while True:
            new_dir = f"..{stamp}.{random.randint(0, 10**9)}"
            try:
                os.mkdir(os.path.join(self.path, new_dir))
                break
            except FileExistsError:
                continue
        os.chmod(os.path.join(self.path, new_dir), 0o755)
        for rel, content in payload.items():
            full = os.path.join(self.path, new_dir, rel)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "wb") as fh:
                fh.write(content)
            os.chmod(full, self.modes.get(rel, self.mode))
        if self.fs_group is not None:
            self._set_ownership(os.path.join(self.path, new_dir))
        # 3. the atomic commit
        tmp = os.path.join(self.path, "..data_tmp")
        os.symlink(new_dir, tmp)
        # The moment the new payload becomes visible, taken just before the rename: taken after
        # it, a writer preempted by the watcher it woke would record a time later than the
        # watcher's reaction (negative latencies on a busy machine).
        self.committed_at = time.monotonic()
        os.rename(tmp, data_link)
        # 4. visible links: create missing, remove dropped
        new_top = {k.split("/")[0] for k in payload}
        for name in sorted(new_top):
            link = os.path.join(self.path, name)
            if not os.path.islink(link):
                os.symlink(os.path.join("..data", name), link)
        for name in sorted(old_top - new_top):
            os.unlink(os.path.join(self.path, name))
        # 5. the old payload goes
        if old_dir:
            shutil.rmtree(os.path.join(self.path, old_dir), ignore_errors=True)
        self.swaps += 1
        return True

    def _set_ownership(self, top):
        """SetVolumeOwnership's read-only variant on a new payload dir (links skipped)."""
        for dirpath, dirs, files in os.walk(top):
            for name in files:
                full = os.path.join(dirpath, name)
                if not os.path.islink(full):
                    os.chown(full, -1, self.fs_group)
                    os.chmod(full, os.stat(full).st_mode & 0o7777 | 0o440)
            os.chown(dirpath, -1, self.fs_group)
            os.chmod(dirpath, os.stat(dirpath).st_mode & 0o7777 | 0o2550)
