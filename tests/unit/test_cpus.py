"""The default worker count: affinity capped by the cgroup CPU quota."""
import os

from engine.system.cpus import cgroup_cpu_limit, usable_cpus


def _tree(tmp_path, proc, files):
    (tmp_path / "proc").write_text(proc)
    for rel, text in files.items():
        path = tmp_path / "cg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(tmp_path / "cg"), str(tmp_path / "proc")


def test_cgroup_v2_quota_in_our_own_cgroup(tmp_path):
    root, proc = _tree(tmp_path, "0::/docker/abc\n", {"docker/abc/cpu.max": "150000 100000\n"})
    assert cgroup_cpu_limit(root, proc) == 1.5
    assert usable_cpus(root, proc) == min(2, len(os.sched_getaffinity(0)))   # ceil(1.5)


def test_cgroup_v2_without_a_limit(tmp_path):
    root, proc = _tree(tmp_path, "0::/\n", {"cpu.max": "max 100000\n"})
    assert cgroup_cpu_limit(root, proc) is None
    assert usable_cpus(root, proc) == len(os.sched_getaffinity(0))


def test_cgroup_v1_quota(tmp_path):
    root, proc = _tree(tmp_path, "2:cpu,cpuacct:/kube/pod1\n1:memory:/x\n",
                       {"cpu,cpuacct/kube/pod1/cpu.cfs_quota_us": "50000\n",
                        "cpu,cpuacct/kube/pod1/cpu.cfs_period_us": "100000\n"})
    assert cgroup_cpu_limit(root, proc) == 0.5
    assert usable_cpus(root, proc) == 1          # never below one worker


def test_cgroup_v1_unlimited(tmp_path):
    root, proc = _tree(tmp_path, "2:cpu:/\n", {"cpu/cpu.cfs_quota_us": "-1\n",
                                              "cpu/cpu.cfs_period_us": "100000\n"})
    assert cgroup_cpu_limit(root, proc) is None


def test_no_cgroup_files_at_all(tmp_path):
    assert cgroup_cpu_limit(str(tmp_path / "none"), str(tmp_path / "none")) is None
    assert usable_cpus(str(tmp_path / "none"), str(tmp_path / "none")) >= 1
