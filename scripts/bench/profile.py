"""Where the district servers spend their time: py-spy sampling during the scenarios.

Each district server started during a profiled scenario gets a ``py-spy record``
attached (raw collapsed stacks, idle threads left out, so the samples are CPU
time); when the server stops, the stacks are summarised as the functions with
the most samples on top of the stack (self) and anywhere on it (total).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from scripts.bench.cluster import BenchError, Cluster, District, Proc


class Profiler:
    def __init__(self, out: Path, *, idle: bool = False) -> None:
        beside = Path(sys.executable).parent / "py-spy"  # the venv's, when installed there
        exe = str(beside) if beside.exists() else shutil.which("py-spy")
        if exe is None:
            raise BenchError("--profile needs py-spy: .venv/bin/pip install py-spy")
        self.exe = exe
        self.out = out
        self.idle = idle  # sample waiting threads too: wall time, not CPU time
        out.mkdir(parents=True, exist_ok=True)
        self._spies: list[tuple[subprocess.Popen[bytes], Path]] = []
        self._scenario = ""
        self._count = 0

    @contextmanager
    def scenario(self, name: str, cluster: Cluster) -> Iterator[None]:
        self._scenario = name
        cluster.on_serve = self._attach
        try:
            yield
        finally:
            cluster.on_serve = None
            for district in (cluster.prior, cluster.new):
                if district is not None:
                    cluster.stop_district(district)  # py-spy writes when its target exits
            self._collect()

    def _attach(self, district: District, proc: Proc) -> None:
        self._count += 1
        raw = self.out / f"{self._scenario}-{district.code}-{self._count}.txt"
        spy = subprocess.Popen(
            [self.exe, "record", "--pid", str(proc.pid), "--format", "raw", "--rate", "500",
             "--nonblocking", *(["--idle"] if self.idle else []), "--output", str(raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.3)  # let it attach before the work starts
        self._spies.append((spy, raw))

    def _collect(self) -> None:
        by_district: dict[str, list[Path]] = {}
        for spy, raw in self._spies:
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
            code = raw.stem.split("-")[1]
            by_district.setdefault(code, []).append(raw)
        self._spies.clear()
        for code, files in by_district.items():
            summary = summarise(files)
            path = self.out / f"{self._scenario}-{code}-summary.txt"
            path.write_text(summary)


def summarise(files: list[Path], top: int = 30) -> str:
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    total = 0
    for path in files:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            frames = [f for f in stack.split(";") if f]
            if frames and frames[0].startswith("process "):
                frames = frames[1:]
            if frames and frames[0].startswith("thread "):
                frames = frames[1:]
            if not frames:
                continue
            total += n
            own[frames[-1]] += n
            for frame in set(frames):
                anywhere[frame] += n
    lines = [f"{total} samples (CPU only, idle threads left out)", "", "self:"]
    for frame, n in own.most_common(top):
        lines.append(f"{100 * n / max(total, 1):6.1f}%  {frame}")
    lines += ["", "total (anywhere on the stack):"]
    for frame, n in anywhere.most_common(top):
        lines.append(f"{100 * n / max(total, 1):6.1f}%  {frame}")
    return "\n".join(lines) + "\n"
