"""Security settings for tests: a shared secret, or a pool of node keypairs that admit
each other. ``settings(mode)`` gives Config overrides for the next node."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mesh

MODES = ("plain", "secret", "keys")


class KeyPool:
    """Key material under one directory for the nodes of one test."""

    def __init__(self, root: Path, pool: int = 6) -> None:
        self.secret_file = mesh.write_secret(root / "mesh.secret")
        self.key_dirs = [root / f"node{i}" for i in range(pool)]
        for directory in self.key_dirs:
            mesh.write_keypair(directory)
        for directory in self.key_dirs:  # every node admits every other
            for other in self.key_dirs:
                shutil.copy(other / "node.key", directory / "allowed" / f"{other.name}.key")
        self._next: Iterator[Path] = itertools.cycle(self.key_dirs)

    def settings(self, mode: str) -> dict[str, Any]:
        if mode == "secret":
            return {"secret_file": self.secret_file}
        if mode == "keys":
            return {"keys_dir": next(self._next)}
        return {}
