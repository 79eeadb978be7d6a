"""The GPU kit's step runner (tools/gpu/steps.py): a step's status is its own process's
(exit 0 ok, another exit failed), a step past its deadline gets SIGINT first (so `dvc repro`
can stop cleanly) and SIGKILL only after the grace period, the budget is shared by all
steps and a step with too little left is skipped; every output line is stamped in the log."""

from __future__ import annotations

import re
import sys
import textwrap
import time

from tools.gpu.steps import STEP_END, Runner


def script(tmp_path, name: str, body: str) -> list[str]:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path)]


def test_exit_codes_give_ok_and_failed_and_the_output_is_stamped(tmp_path, capsys):
    log = tmp_path / "run.log"
    r = Runner("t", budget_s=120, log=log)
    ok = r.run("fine", script(tmp_path, "fine", "print('hello')"))
    bad = r.run("broken", script(tmp_path, "broken", "import sys; print('oops'); sys.exit(3)"))
    assert (ok.status, bad.status) == ("ok", "failed") and "exit 3" in bad.note
    assert not r.all_ok()
    text = log.read_text()
    assert re.search(r"^\d+\.\d\d hello$", text, re.M) and re.search(r"^\d+\.\d\d oops$", text, re.M)
    assert re.search(rf"^\d+\.\d\d {STEP_END} broken failed$", text, re.M)
    out = capsys.readouterr().out.splitlines()  # one status line per step
    assert len(out) == 2 and re.fullmatch(r"\[t\] fine: ok \(\d+ s\)", out[0])
    assert re.fullmatch(r"\[t\] broken: failed \(\d+ s, exit 3; see the log\)", out[1])


def test_a_step_past_its_deadline_gets_sigint_first(tmp_path):
    log = tmp_path / "run.log"
    slow = script(tmp_path, "slow", """
        import signal, sys, time
        def stop(signum, frame):
            print("got SIGINT, stopping cleanly", flush=True)
            sys.exit(130)
        signal.signal(signal.SIGINT, stop)
        print("started", flush=True)
        time.sleep(60)
        """)
    t0 = time.monotonic()
    step = Runner("t", budget_s=120, log=log, grace_s=20).run("slow", slow, limit_s=3)
    assert step.status == "timeout" and step.note == "stopped at 3 s (SIGINT)"
    assert time.monotonic() - t0 < 10  # it stopped on SIGINT, not after the grace period
    assert "got SIGINT, stopping cleanly" in log.read_text()


def test_a_step_that_ignores_sigint_is_killed_after_the_grace_period(tmp_path):
    stubborn = script(tmp_path, "stubborn", """
        import signal, time
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("ignoring SIGINT", flush=True)
        time.sleep(60)
        """)
    t0 = time.monotonic()
    runner = Runner("t", budget_s=120, log=tmp_path / "run.log", grace_s=1)
    step = runner.run("stubborn", stubborn, limit_s=3)
    assert step.status == "timeout" and "SIGKILL" in step.note
    assert time.monotonic() - t0 < 15


def test_the_budget_is_shared_and_a_step_with_too_little_left_is_skipped(tmp_path):
    r = Runner("t", budget_s=13, log=tmp_path / "run.log")
    first = r.run("first", script(tmp_path, "nap", "import time; time.sleep(4)"))
    assert first.ok and r.left() < 10
    second = r.run("second", script(tmp_path, "never", "open('ran', 'w')"), cwd=tmp_path)
    assert (second.status, second.note) == ("skipped", "no time left")
    assert not (tmp_path / "ran").exists()
    reserved = Runner("t", budget_s=60, log=tmp_path / "run.log").run(
        "reserved", script(tmp_path, "never", "open('ran', 'w')"), reserve_s=55, cwd=tmp_path)
    assert reserved.status == "skipped"  # what is kept for later steps is not this step's


def test_a_command_that_cannot_start_is_failed(tmp_path):
    step = Runner("t", budget_s=60, log=tmp_path / "run.log").run("missing", [str(tmp_path / "no-such")])
    assert step.status == "failed" and "exit 127" in step.note
