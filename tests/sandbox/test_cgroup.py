"""Finding this process's memory cgroup in either cgroup version, from the two /proc files (so that the version
this machine does not run is checked too); making, bounding and removing a run's group where one can be made."""

from pathlib import Path

import pytest

from rftune.sandbox import cgroup

V1 = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V1_MEMBERSHIP = "8:pids:/\n4:memory:/process_api/abc\n0::/\n"
V2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
V2_MEMBERSHIP = "0::/user.slice/user-1000.slice/user@1000.service/app.slice\n"
NAMESPACED = "30 23 0:26 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"


def test_both_versions_are_found_where_they_are_mounted():
    assert cgroup.candidates(V1, V1_MEMBERSHIP) == [
        cgroup.Parent(Path("/sys/fs/cgroup/memory/process_api/abc"), 1),
        cgroup.Parent(Path("/sys/fs/cgroup/unified"), 2)]
    assert cgroup.candidates(V2, V2_MEMBERSHIP) == [
        cgroup.Parent(Path("/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice"), 2)]
    assert cgroup.candidates(NAMESPACED, "0::/kubepods/pod1/worker\n") == [
        cgroup.Parent(Path("/sys/fs/cgroup/worker"), 2)]
    assert cgroup.candidates(NAMESPACED, "0::/elsewhere\n") == []  # not below the mounted part


@pytest.mark.skipif(cgroup.parent() is None, reason="no memory cgroup can be made here")
def test_a_run_group_is_bounded_and_removed():
    group = cgroup.RunCgroup(cgroup.parent(), 100)
    limit = "memory.max" if group.version == 2 else "memory.limit_in_bytes"
    assert int((group.path / limit).read_text()) == 100 * cgroup.MB
    assert (group.oom_kills(), Path(group.procs).read_text()) == (0, "")
    group.remove()
    assert not group.path.exists()
