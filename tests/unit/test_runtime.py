"""runtime.process_age: the stage timings' ``startup`` and ``total`` start at the process's
own start, not a second earlier (psutil's create_time rounds the boot time to whole
seconds)."""

from __future__ import annotations

import subprocess
import sys
import time

CODE = ("import time; time.sleep(0.5); from pst_distill.runtime import process_age; "
        "print(process_age())")


def test_process_age_lies_inside_the_parents_clock():
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - start
    age = float(out.stdout)
    assert 0.5 <= age <= elapsed + 0.02, (age, elapsed)
