"""The workers of one replay command: Celery worker processes on the run's broker, or none.

``--workers N`` starts N solo-pool worker processes (``python -m workers.replay_tasks``) on
the run's private broker, purged first; they are killed with the command if it dies
(``PR_SET_PDEATHSIG``) and stopped when it ends. ``--workers 0`` runs each step in the
command's own process, one item at a time, in the same order. The command never blocks on a
task: it polls the run store for progress.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from workers.replay_manifest import Manifest, ReplayError
from workers.replay_run import open_context

POLL_S = 0.3
STALL_RESEND_S = 60.0
"""Without progress for this long, the pending steps are sent again (they are idempotent)."""
WORKER_STOP_S = 15.0
Progress = Callable[[str, int, int], None]
"""``progress(phase, done, total)``: called as items are scanned and assessed."""


class ReplayPool:
    """The replay's workers: Celery worker processes on the run's broker, or this process."""

    def __init__(self, run_dir: Path, manifest: Manifest, app: Any,
                 procs: list[subprocess.Popen[bytes]]) -> None:
        self.run_dir, self.manifest, self.app, self.procs = run_dir, manifest, app, procs
        self._ctx: Any = None
        self._pending: list[tuple[Callable[[Any, int], object], int]] = []

    def _context(self) -> Any:
        if self._ctx is None:
            self._ctx = open_context(self.run_dir)
        return self._ctx

    def scan(self, item_ids: list[int]) -> None:
        """Scan these items (sent as one group, or done here)."""
        if not item_ids:
            return
        if self.app is not None:
            from workers.replay_tasks import send_scans

            send_scans(self.app, self.manifest.run_id, item_ids)
            return
        from workers.replay_run import scan_item

        self._pending = [(scan_item, i) for i in item_ids]

    def assess(self, partitions: list[list[int]]) -> None:
        """Assess the partitions (one group of chains, or in turn here)."""
        if self.app is not None:
            from workers.replay_tasks import send_chains

            send_chains(self.app, self.manifest.run_id, partitions)
            return
        from workers.replay_run import assess_one

        self._pending = [(assess_one, i) for p in partitions for i in p]

    def wait(self, done: Callable[[], tuple[int, int]], phase: str, progress: Progress,
             resend: Callable[[], None] | None = None) -> None:
        """Until ``done()`` reaches its total (or reports a failure, as -1).

        ``resend`` is called when nothing has progressed for :data:`STALL_RESEND_S`: a
        serverless broker may lose a message (a worker reading a file being written);
        the steps are idempotent and keep their order, so sending again is safe.
        """
        pending, self._pending = self._pending, []
        for step, item_id in pending:  # in-process: one at a time, reporting as it goes
            try:
                step(self._context(), item_id)
            except Exception as exc:
                from workers.replay_run import mark_failed

                if phase == "assessing":
                    mark_failed(self._context(), item_id, exc)
                    break
                raise
            count, total = done()
            progress(phase, max(count, 0), total)
        last, since = -1, time.monotonic()
        while True:
            count, total = done()
            progress(phase, max(count, 0), total)
            if count < 0 or count >= total or self.app is None:
                return
            if count != last:
                last, since = count, time.monotonic()
            elif resend is not None and time.monotonic() - since > STALL_RESEND_S:
                resend()
                since = time.monotonic()
            gone = [p for p in self.procs if p.poll() is not None]
            if gone:
                # A worker never exits on its own: the item it held stays claimed for this
                # command's life, and its chain cannot go on. Stop; resuming resets it.
                raise ReplayError(f"{len(gone)} of {len(self.procs)} replay worker(s) exited "
                                  f"(codes {[p.returncode for p in gone]}); see "
                                  f"{self.run_dir / 'logs'}; run the same command to resume")
            time.sleep(POLL_S)

    def close(self) -> None:
        """Release the in-process context."""
        if self._ctx is not None:
            self._ctx.close()


@contextmanager
def start_workers(workers: int, broker_url: str | None, run_dir: Path,
                  manifest: Manifest) -> Iterator[ReplayPool]:
    """Start ``--workers N`` worker processes on the run's broker (purged first)."""
    if workers == 0:
        pool = ReplayPool(run_dir, manifest, None, [])
        try:
            yield pool
        finally:
            pool.close()
        return
    from workers.replay_tasks import make_replay_celery, purge

    app = make_replay_celery(run_dir, manifest.run_id, broker_url)
    purge(app, manifest.run_id)
    logs = run_dir / "logs"
    logs.mkdir(exist_ok=True)
    procs = []
    cmd = [sys.executable, "-m", "workers.replay_tasks", str(run_dir)]
    if broker_url:
        cmd += ["--broker", broker_url]
    paths = [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    # Numba's parallel kernels take every core in each worker: N workers would
    # oversubscribe the machine N times over. Share the cores out instead.
    env.setdefault("NUMBA_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    try:
        for n in range(workers):
            with open(logs / f"worker-{n + 1}.log", "ab") as log:
                procs.append(subprocess.Popen([*cmd, "--name", f"replay{n + 1}"], env=env,
                                              stdout=log, stderr=subprocess.STDOUT,
                                              preexec_fn=_die_with(os.getpid())))
        yield ReplayPool(run_dir, manifest, app, procs)
    finally:
        _stop(procs)
        purge(app, manifest.run_id)


def _die_with(parent_pid: int) -> Callable[[], None]:
    """The child's pre-exec step: be killed when the replay command dies (Linux)."""

    def die_with_parent() -> None:
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PDEATHSIG
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent_pid:  # the command died before the prctl: no orphan
            os._exit(1)

    return die_with_parent


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + WORKER_STOP_S
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

