"""Writing an export's files all or nothing: into a hidden folder, moved in at the end."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, BinaryIO, TextIO

from rt_client.errors import InvalidInput

__all__ = ["Staging"]


class Staging:
    """Files written under a temporary folder inside ``out_dir``, moved to ``out_dir`` on success.

    Refuses (``InvalidInput``) before writing anything when ``out_dir`` is a
    file or already holds one of ``names``; an exception inside the ``with``
    leaves ``out_dir`` as it was.
    """

    def __init__(self, out_dir: Path, names: Sequence[str]) -> None:
        if out_dir.exists() and not out_dir.is_dir():
            raise InvalidInput(f"{out_dir} is a file, not a folder: name a folder to write into")
        there = [n for n in names if (out_dir / n).exists()]
        if there:
            raise InvalidInput(
                f"{out_dir} already holds {', '.join(there)}: move them away or name another folder"
            )
        self.out_dir = out_dir
        self.names = list(names)
        self._open: list[IO[str] | IO[bytes]] = []
        self.tmp = Path()

    def __enter__(self) -> Staging:
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.tmp = Path(tempfile.mkdtemp(prefix=".rt-export-", dir=self.out_dir))
        except OSError as exc:
            raise InvalidInput(f"cannot write into {self.out_dir}: {exc.strerror}") from None
        return self

    def path(self, name: str) -> Path:
        return self.tmp / name

    def open_text(self, name: str) -> TextIO:
        f = open(self.tmp / name, "w", encoding="utf-8", newline="")  # noqa: SIM115
        self._open.append(f)
        return f

    def open_binary(self, name: str) -> BinaryIO:
        f = open(self.tmp / name, "wb")  # noqa: SIM115
        self._open.append(f)
        return f

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for f in self._open:
            f.close()
        try:
            if kind is None:
                for name in self.names:
                    os.replace(self.tmp / name, self.out_dir / name)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
