"""handmesh.progress: a bounded number of whole lines when stderr is a file, a live tqdm bar on a terminal."""

from __future__ import annotations

import io
import subprocess
import sys

from tqdm import tqdm

from handmesh.progress import LineProgress, progress_bar

SCRIPT = """
from handmesh.progress import progress_bar
for _ in progress_bar(range(20000), desc="work", mininterval=0):
    pass
with progress_bar(total=5000, desc="manual", unit="sample", mininterval=0) as bar:
    for _ in range(5000):
        bar.update(1)
"""


def test_stderr_to_a_file_gets_a_line_every_tenth_and_no_redraws(tmp_path):
    log = tmp_path / "log.txt"
    with open(log, "w") as stderr:
        subprocess.run([sys.executable, "-c", SCRIPT], stderr=stderr, check=True, timeout=120)
    text = log.read_text()
    assert "\r" not in text
    lines = text.splitlines()
    work = [line for line in lines if line.startswith("work:")]
    manual = [line for line in lines if line.startswith("manual:")]
    assert len(work) + len(manual) == len(lines)
    # a line at each tenth (fast loops: the 30 s lines never come); the last one says 100 %
    assert len(work) == 10 and len(manual) == 10, text
    assert work[-1].startswith("work: 100% 20000/20000") and manual[-1].startswith("manual: 100% 5000/5000")
    assert work[0].startswith("work:  10% 2000/20000")


def test_unknown_total_and_early_stop_write_one_final_line():
    stream = io.StringIO()
    with progress_bar(total=None, desc="stream", file=stream, every_s=3600.0, mininterval=0) as bar:
        for _ in range(100):
            bar.update(1)
    assert stream.getvalue().splitlines() == [stream.getvalue().strip()] and "stream: 100" in stream.getvalue()
    stopped = io.StringIO()
    with progress_bar(total=1000, desc="stopped", file=stopped, mininterval=0) as bar:
        bar.update(150)
        bar.update(5)  # stopped at 15.5 %: a line at 10 % (when 150 came in) and one at the end
    assert [line.split("%")[0] for line in stopped.getvalue().splitlines()] == ["stopped:  15", "stopped:  16"]


def test_seconds_bound_the_silence_when_the_fraction_moves_slowly():
    stream = io.StringIO()
    with progress_bar(total=10**6, desc="slow", file=stream, every_s=0.0, mininterval=0) as bar:
        bar.update(1)
        bar.update(1)
    assert len(stream.getvalue().splitlines()) == 2  # every display is due at every_s=0; no extra line at the end


def test_a_terminal_gets_tqdm_and_disable_writes_nothing():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    bar = progress_bar(total=3, file=Terminal())
    assert type(bar) is tqdm
    bar.close()
    stream = io.StringIO()
    quiet = progress_bar(range(10), file=stream, disable=True)
    assert isinstance(quiet, LineProgress) and list(quiet) == list(range(10))
    quiet.close()
    assert stream.getvalue() == ""
