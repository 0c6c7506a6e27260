"""rftune.runtime.atomic_io: a reader, or a kill, never sees a half-written file or a mix of two folders."""

import os
import signal
import subprocess
import sys
import time

from rftune.runtime.atomic_io import replace_dir, write_text_atomic

WRITER = """
import sys
from rftune.runtime.atomic_io import write_text_atomic
path, n = sys.argv[1], 0
print("ready", flush=True)
while True:
    n += 1
    write_text_atomic(path, str(n % 10) * 4_000_000)
"""


def test_a_file_holds_its_old_or_its_whole_new_content_after_a_kill(tmp_path):
    target = tmp_path / "state.txt"
    write_text_atomic(target, "0" * 4_000_000)
    for delay in (0.05, 0.13, 0.29):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        text = target.read_text()
        assert len(text) == 4_000_000 and len(set(text)) == 1  # one whole write, never a cut or a mix
    leftovers = [p for p in tmp_path.iterdir() if p.name != "state.txt"]
    assert all(p.name.startswith(".tmp-state.txt-") for p in leftovers)  # a killed writer's temporary, named so


def test_write_text_atomic_replaces_and_makes_the_folder(tmp_path):
    target = tmp_path / "a" / "b.json"
    write_text_atomic(target, "first")
    write_text_atomic(target, "second ✓")
    assert target.read_text(encoding="utf-8") == "second ✓"
    assert os.listdir(target.parent) == ["b.json"]


def test_replace_dir_swaps_a_whole_folder_and_leaves_nothing_behind(tmp_path):
    final = tmp_path / "adapter"
    for version in ("old", "new"):
        staging = tmp_path / f".tmp-{version}"
        staging.mkdir()
        (staging / "weights").write_text(version)
        if version == "old":
            (staging / "only-in-old").write_text("x")
        replace_dir(staging, final)
    assert sorted(os.listdir(final)) == ["weights"] and (final / "weights").read_text() == "new"
    assert os.listdir(tmp_path) == ["adapter"]
