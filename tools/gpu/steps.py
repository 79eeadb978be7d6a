"""Steps under one deadline: each one a subprocess with its own limit, capped by what is
left of a budget that all steps share.

    runner = Runner("gpu_check", budget_s=300, log=Path("out/gpu_check.log"))
    step = runner.run("install", [python, "-m", "pip", ...], limit_s=60, env=env)
    step.status   # ok | timeout | failed | skipped | left out

A step with under ``min_step_s`` (10 s) left is skipped. Its output (stdout and stderr)
goes to the log, every line stamped with the epoch seconds (read here, line by line: no
shell pipeline between the command and its exit code), between a header and a
``##step-end`` line; one status line goes to stdout. At its deadline the step's process
group gets SIGINT, as Ctrl-C would: ``dvc repro`` and the stage it runs stop cleanly and
DVC keeps the stages that finished. What is still running ``grace_s`` later gets SIGKILL.
The status is the process's own: exit 0 ok, another exit failed, stopped timeout.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

MIN_STEP_S = 10.0
GRACE_S = 15.0
STEP_END = "##step-end"


@dataclass
class Step:
    name: str
    status: str  # ok | timeout | failed | skipped | left out
    seconds: float
    note: str = ""

    @property
    def ok(self) -> bool:
        """Passed, or left out by plan (a seed that would not fit): nothing went wrong."""
        return self.status in ("ok", "left out")

    def row(self) -> list[str]:
        return [self.name, self.status, f"{self.seconds:.0f}", self.note]


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def stamp(line: str) -> str:
    return f"{time.time():.2f} {line.rstrip(chr(10))}\n"


class Runner:
    def __init__(self, tag: str, budget_s: float, log: Path, grace_s: float = GRACE_S,
                 min_step_s: float | None = None):
        self.tag, self.log, self.grace_s = tag, Path(log), grace_s
        self.min_step_s = MIN_STEP_S if min_step_s is None else min_step_s
        self.deadline = time.monotonic() + budget_s
        self.steps: list[Step] = []

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def all_ok(self) -> bool:
        return all(s.ok for s in self.steps)

    def skip(self, name: str, note: str) -> Step:
        return self._record(Step(name, "skipped", 0.0, note))

    def leave_out(self, name: str, note: str) -> Step:
        """A step not started on purpose (it would not fit): recorded, not a failure."""
        self.note(f"{STEP_END} {name} left out: {note}")
        return self._record(Step(name, "left out", 0.0, note))

    def note(self, text: str) -> None:
        """A stamped line of the tool's own in the log."""
        with self.log.open("a") as log:
            log.write(stamp(text))

    def run(self, name: str, cmd: list[str], limit_s: float | None = None, reserve_s: float = 0.0,
            cwd: Path | None = None, env: dict | None = None) -> Step:
        """``cmd`` under ``limit_s`` (None: all that is left), capped by what is left of the
        budget minus ``reserve_s`` (kept for the steps after it)."""
        left = self.left() - reserve_s
        if left < self.min_step_s:
            return self.skip(name, "no time left")
        limit = left if limit_s is None else min(limit_s, left)
        with self.log.open("a") as log:
            log.write(f"\n===== {name} (limit {limit:.0f} s) {utc_now()}\n")
            log.write(stamp(f"$ {shlex.join(map(str, cmd))}"))
        t0 = time.monotonic()
        rc, stopped = self._execute(cmd, limit, cwd, env)
        seconds = time.monotonic() - t0
        if stopped:
            status, note = "timeout", f"stopped at {limit:.0f} s ({stopped})"
        elif rc == 0:
            status, note = "ok", ""
        else:
            status, note = "failed", f"exit {rc}; see the log"
        self.note(f"{STEP_END} {name} {status}")
        return self._record(Step(name, status, seconds, note))

    def _execute(self, cmd, limit, cwd, env) -> tuple[int, str]:
        """(exit code, '' or how it was stopped)."""
        with self.log.open("a", buffering=1) as log:
            try:
                proc = subprocess.Popen(list(map(str, cmd)), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        errors="replace", start_new_session=True)
            except OSError as exc:
                log.write(stamp(f"cannot start: {exc}"))
                return 127, ""
            reader = threading.Thread(target=_copy_stamped, args=(proc.stdout, log), daemon=True)
            reader.start()
            try:
                rc, stopped = proc.wait(timeout=limit), ""
            except subprocess.TimeoutExpired:
                rc, stopped = self._stop(proc)
            except KeyboardInterrupt:  # the tool's own Ctrl-C: stop the step the same way
                self._stop(proc)
                raise
            finally:
                reader.join(timeout=5)
        return rc, stopped

    def _stop(self, proc: subprocess.Popen) -> tuple[int, str]:
        """SIGINT to the whole group, SIGKILL to what is left of it after the grace period."""
        _signal_group(proc.pid, signal.SIGINT)
        stopped = "SIGINT"
        try:
            rc = proc.wait(timeout=self.grace_s)
        except subprocess.TimeoutExpired:
            rc, stopped = None, "SIGINT, then SIGKILL"
        end = time.monotonic() + (self.grace_s if rc is not None else 0)
        while _group_alive(proc.pid) and time.monotonic() < end:
            time.sleep(0.1)  # the stage's own processes, after dvc itself has stopped
        if _group_alive(proc.pid):
            _signal_group(proc.pid, signal.SIGKILL)
            stopped = "SIGINT, then SIGKILL"
        return proc.wait(), stopped

    def _record(self, step: Step) -> Step:
        self.steps.append(step)
        extra = f", {step.note}" if step.note else ""
        print(f"[{self.tag}] {step.name}: {step.status} ({step.seconds:.0f} s{extra})", flush=True)
        return step


def _copy_stamped(stream, log) -> None:
    try:
        for line in stream:
            log.write(stamp(line))
    except ValueError:  # the log was closed: a leftover process still held the pipe
        pass
    stream.close()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
