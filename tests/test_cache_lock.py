"""Two processes that need one cache entry build it once: the second waits for the first."""

import subprocess
import sys
import time

from personalab._io import cache_lock

HOLDER = """
import sys, time
from pathlib import Path
from personalab._io import cache_lock
entry = Path(sys.argv[1])
with cache_lock(entry):
    print("locked", flush=True)
    time.sleep(1.5)
    entry.write_text("built by the first process")
"""


def test_second_process_waits_and_finds_the_entry(tmp_path):
    entry = tmp_path / "vectors" / "sad-abc.json"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(entry)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    start = time.perf_counter()
    with cache_lock(entry):
        waited = time.perf_counter() - start
        assert entry.read_text() == "built by the first process"
    holder.wait(timeout=30)
    assert waited > 0.5 and holder.returncode == 0
