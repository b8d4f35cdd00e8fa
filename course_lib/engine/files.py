"""Files and folders written whole or not at all.

Everything the course writes that a user keeps (checkpoints, saved models and policies,
executed notebooks, reports, the course site, sweep results) is first written beside
its destination and then renamed into place: a crash, a full disk or Ctrl-C leaves
either the previous version or the new one, never half of one, and no temporary file.

- :func:`atomic_path`: a temporary path beside ``path`` that becomes ``path`` when the
  block ends without an error (and is removed when it does not);
- :func:`write_bytes_atomic`, :func:`write_text_atomic`, :func:`atomic_torch_save`: the
  common writes through it;
- :func:`atomic_directory`: the same for a folder (a saved model, a site): it is built
  in a staging folder, and an existing folder is moved aside for the instant of the swap
  and deleted afterwards.

Defined for Chapter 02's checkpoints; used by every part of the course that writes files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch


@contextmanager
def atomic_path(path):
    """Yield a temporary file path beside ``path``; on success it is renamed to ``path``, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(temp_name)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as temp:
        temp.write_bytes(data)


def write_text_atomic(path, text: str) -> None:
    """Write UTF-8 ``text`` (newlines kept as ``\\n``) to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def atomic_torch_save(obj, path) -> None:
    """``torch.save(obj, path)``, atomically."""
    with atomic_path(path) as temp:
        torch.save(obj, temp)


@contextmanager
def atomic_directory(path):
    """Yield an empty staging folder beside ``path``; when the block succeeds it replaces ``path``.

    An existing folder at ``path`` is renamed into a hidden folder beside it, the staging
    folder is renamed to ``path``, and only then is the old one deleted. If the block
    raises, the staging folder is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.new."))
    try:
        yield staging
        retired = None
        if path.exists():
            retired = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old."))
            os.replace(path, retired / path.name)
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)
