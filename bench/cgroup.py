"""Run a command inside a memory cgroup, with a wall-clock limit, and say what happened.

Used by bench/ltr.py (the larger-than-RAM benchmark). Needs root and a memory controller:
cgroup v1 (/sys/fs/cgroup/memory/NAME, memory.limit_in_bytes) or cgroup v2 (/sys/fs/cgroup/NAME,
memory.max); which one the machine has is detected.

    from cgroup import run, drop_caches
    res = run(["python", "child.py"], limit_bytes=256 << 20, timeout=120,
              stdout=open("out", "w"), stderr=open("err", "w"))
    res["status"]       # "ok", "killed by the memory limit", "stalled: not done in 120 s", ...
    res["peak_bytes"]   # the group's peak charge: anonymous memory and page cache it touched
    res["pgmajfault"]   # major faults in the group

The child is started as `sh -c 'echo $$ > GROUP/cgroup.procs && exec "$@"' sh CMD...`, so the
command itself (same pid as the Popen) and everything it starts are in the group from their
first instruction. On time-out every process of the group is killed. The group is removed at the
end (leftover processes are killed, and any that will not die are moved to the root group
first). Page cache is charged to the group that first reads a page: drop the caches (drop_caches)
before a measurement that should start cold.

`python bench/cgroup.py [--limit-mib N] [--timeout S] -- CMD...` runs one command this way and
prints the report as JSON (handy by hand).
"""

import errno
import json
import os
import signal
import subprocess
import sys
import time

V1_ROOT = "/sys/fs/cgroup/memory"
V2_ROOT = "/sys/fs/cgroup"
PREFIX = "hannoy-ltr"
MiB = 1 << 20


class CgroupError(RuntimeError):
    """No usable memory cgroup here (not root, no memory controller, cannot create a group)."""


def _read(path, default=None):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def _write(path, value):
    with open(path, "w") as f:
        f.write(str(value))


def _int(path):
    s = _read(path)
    if s is None:
        return None
    s = s.strip()
    if s == "max":
        return None
    try:
        return int(s)
    except ValueError:
        return None


def _kv(path):
    """'key value' lines (memory.stat, memory.events, memory.oom_control) -> dict of ints."""
    out = {}
    for line in (_read(path) or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


def detect():
    """-> (version 1 or 2, root directory of the memory hierarchy). Raises CgroupError."""
    if os.geteuid() != 0:
        raise CgroupError("memory cgroups need root (this process runs as uid %d): run the benchmark as root"
                          % os.geteuid())
    if os.path.exists(os.path.join(V1_ROOT, "memory.limit_in_bytes")) or \
            os.path.exists(os.path.join(V1_ROOT, "memory.usage_in_bytes")):
        return 1, V1_ROOT
    controllers = _read(os.path.join(V2_ROOT, "cgroup.controllers"))
    if controllers is not None and "memory" in controllers.split():
        return 2, V2_ROOT
    raise CgroupError("no cgroup memory controller: neither %s (cgroup v1) nor 'memory' in %s/cgroup.controllers "
                      "(cgroup v2). Mount one, e.g. `mount -t cgroup -o memory none %s`."
                      % (V1_ROOT, V2_ROOT, V1_ROOT))


def drop_caches():
    """Write dirty pages out and drop the page cache (and dentries, inodes): a cold start."""
    os.sync()
    try:
        _write("/proc/sys/vm/drop_caches", 3)
    except OSError as e:
        raise CgroupError("cannot drop the page cache (/proc/sys/vm/drop_caches: %s); run as root" % e)


class MemoryCgroup:
    """One memory cgroup. limit_bytes=None: no limit (the group still counts usage and faults)."""

    def __init__(self, name=None, limit_bytes=None):
        self.version, self.root = detect()
        self.name = name or "%s-%d-%d" % (PREFIX, os.getpid(), time.monotonic_ns())
        self.path = os.path.join(self.root, self.name)
        self.limit_bytes = limit_bytes
        if self.version == 2:
            self._enable_v2_controller()
        try:
            os.mkdir(self.path)
        except OSError as e:
            raise CgroupError("cannot create the cgroup %s: %s" % (self.path, e))
        try:
            if self.version == 1:
                if limit_bytes is not None:
                    _write(os.path.join(self.path, "memory.limit_in_bytes"), int(limit_bytes))
                    # no swap on the benchmark machines; where there is, keep it out of the picture
                    if os.path.exists(os.path.join(self.path, "memory.memsw.limit_in_bytes")):
                        try:
                            _write(os.path.join(self.path, "memory.memsw.limit_in_bytes"), int(limit_bytes))
                        except OSError:
                            pass
            else:
                if limit_bytes is not None:
                    _write(os.path.join(self.path, "memory.max"), int(limit_bytes))
                    if os.path.exists(os.path.join(self.path, "memory.swap.max")):
                        try:
                            _write(os.path.join(self.path, "memory.swap.max"), 0)
                        except OSError:
                            pass
        except OSError as e:
            self.remove()
            raise CgroupError("cannot set the memory limit of %s: %s" % (self.path, e))

    def _enable_v2_controller(self):
        sub = os.path.join(self.root, "cgroup.subtree_control")
        if "memory" not in (_read(sub) or "").split():
            try:
                _write(sub, "+memory")
            except OSError as e:
                raise CgroupError("cgroup v2: cannot enable the memory controller for children of %s: %s"
                                  % (self.root, e))

    def _file(self, name):
        return os.path.join(self.path, name)

    def wrap(self, argv):
        """argv -> a command that moves itself into this group, then execs argv (same pid)."""
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', self._file("cgroup.procs")] + list(argv)

    def pids(self):
        s = _read(self._file("cgroup.procs"), "")
        return [int(x) for x in s.split()]

    def usage(self):
        """Bytes charged to the group now (anonymous memory and page cache)."""
        return _int(self._file("memory.usage_in_bytes" if self.version == 1 else "memory.current"))

    def stats(self):
        """The group's counters: peak, limit hits, OOM kills, major faults, memory.stat subset."""
        st = _kv(self._file("memory.stat"))
        out = {"cgroup_version": self.version, "limit_bytes": self.limit_bytes}
        if self.version == 1:
            out["peak_bytes"] = _int(self._file("memory.max_usage_in_bytes"))
            out["failcnt"] = _int(self._file("memory.failcnt"))
            oom = _kv(self._file("memory.oom_control"))
            out["oom_kills"] = oom.get("oom_kill")
            out["pgmajfault"] = st.get("total_pgmajfault", st.get("pgmajfault"))
            out["stat"] = {k: st.get("total_" + k, st.get(k)) for k in
                           ("cache", "rss", "mapped_file", "dirty", "writeback", "pgfault", "pgmajfault")}
        else:
            out["peak_bytes"] = _int(self._file("memory.peak"))  # kernels >= 5.19
            ev = _kv(self._file("memory.events"))
            out["failcnt"] = ev.get("max")  # times the usage hit memory.max
            out["oom_kills"] = ev.get("oom_kill")
            out["events"] = ev
            out["pgmajfault"] = st.get("pgmajfault")
            out["stat"] = {k: st.get(k) for k in ("anon", "file", "file_mapped", "file_dirty", "file_writeback",
                                                   "pgfault", "pgmajfault")}
        return out

    def kill_all(self, deadline_s=10.0):
        """SIGKILL every process of the group until none is left (or deadline_s passes)."""
        if self.version == 2 and os.path.exists(self._file("cgroup.kill")):
            try:
                _write(self._file("cgroup.kill"), 1)
            except OSError:
                pass
        end = time.monotonic() + deadline_s
        while True:
            pids = self.pids()
            if not pids:
                return True
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > end:
                return False
            time.sleep(0.05)

    def remove(self):
        """Kill what is left, move anything that survives to the root group, remove the group."""
        if not os.path.isdir(self.path):
            return
        if not self.kill_all(deadline_s=5.0):
            for pid in self.pids():  # e.g. stuck in uninterruptible sleep: out of our way
                try:
                    _write(os.path.join(self.root, "cgroup.procs"), pid)
                except OSError:
                    pass
        for _ in range(100):
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError as e:
                if e.errno != errno.EBUSY:
                    raise
                for pid in self.pids():
                    try:
                        _write(os.path.join(self.root, "cgroup.procs"), pid)
                    except OSError:
                        pass
                time.sleep(0.1)
        print("cgroup.py: WARNING: could not remove %s" % self.path, file=sys.stderr)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def remove_stale(prefix=PREFIX):
    """Remove groups left by earlier runs whose creating process is gone (names PREFIX-PID-...)."""
    try:
        _, root = detect()
    except CgroupError:
        return []
    removed = []
    for name in os.listdir(root):
        if not name.startswith(prefix + "-"):
            continue
        try:
            pid = int(name[len(prefix) + 1:].split("-")[0])
        except ValueError:
            continue
        if pid == os.getpid() or os.path.exists("/proc/%d" % pid):
            continue
        g = object.__new__(MemoryCgroup)
        g.version, g.root, g.name, g.path, g.limit_bytes = (1 if root == V1_ROOT else 2), root, name, \
            os.path.join(root, name), None
        g.remove()
        removed.append(name)
    return removed


def describe_exit(rc, stats, timed_out, timeout):
    """A short human status from the exit code, the time-out flag and the group's counters."""
    if timed_out:
        return "stalled: not done in %s s" % ("%.0f" % timeout if timeout >= 10 else "%.3g" % timeout)
    if rc == 0:
        return "ok"
    oom = (stats.get("oom_kills") or 0) > 0
    if rc in (-signal.SIGKILL, 128 + signal.SIGKILL):
        if oom or (stats.get("oom_kills") is None and stats.get("limit_bytes") is not None):
            return "killed by the memory limit (exit status 137%s)" % (", %d OOM kill(s)" % stats["oom_kills"]
                                                                       if oom else "")
        return "killed (SIGKILL, exit status 137)"
    if rc < 0:
        return "killed by signal %d%s" % (-rc, " (after %d OOM kill(s) in the group)" % stats["oom_kills"]
                                          if oom else "")
    return "exit status %d%s" % (rc, " (after %d OOM kill(s) in the group)" % stats["oom_kills"] if oom else "")


def run(argv, limit_bytes=None, timeout=None, env=None, cwd=None, stdout=None, stderr=None,
        sample=None, sample_interval=0.05, name=None):
    """Run argv in a new memory cgroup; wait at most `timeout` seconds (then kill the whole group).

    sample(pid, group), if given, is called about every sample_interval seconds while the child
    runs (from this process, outside the group: it costs the group nothing).
    -> dict: status, returncode, exit_status (137 for SIGKILL, like a shell), timed_out,
    killed_by_limit, wall_s, peak_bytes, failcnt, oom_kills, pgmajfault, stat, limit_bytes.
    """
    group = MemoryCgroup(name=name, limit_bytes=limit_bytes)
    proc = None
    timed_out = False
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(group.wrap(argv), env=env, cwd=cwd, stdout=stdout, stderr=stderr,
                                stdin=subprocess.DEVNULL)
        while True:
            try:
                proc.wait(timeout=sample_interval)
                break
            except subprocess.TimeoutExpired:
                pass
            if sample is not None:
                try:
                    sample(proc.pid, group)
                except Exception:  # a sampler must never break the run
                    pass
            if timeout is not None and time.monotonic() - t0 > timeout:
                timed_out = True
                group.kill_all()
                proc.wait()
                break
        wall = time.monotonic() - t0
        group.kill_all()  # anything the child left running
        stats = group.stats()
    finally:
        if proc is not None and proc.poll() is None:  # interrupted (Ctrl-C, an exception): no orphans
            group.kill_all()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        group.remove()
    rc = proc.returncode
    stats.update(
        returncode=rc,
        exit_status=(128 - rc) if rc < 0 else rc,
        timed_out=timed_out,
        timeout_s=timeout,
        wall_s=wall,
        status=describe_exit(rc, stats, timed_out, timeout),
    )
    sigkill = rc in (-signal.SIGKILL, 137)
    if stats.get("oom_kills") is not None:  # the kernel's own count: the reliable sign
        stats["killed_by_limit"] = not timed_out and stats["oom_kills"] > 0
    else:
        stats["killed_by_limit"] = not timed_out and sigkill and limit_bytes is not None
    return stats


def _main(argv):
    import argparse

    p = argparse.ArgumentParser(description="Run one command in a memory cgroup and print what happened.")
    p.add_argument("--limit-mib", type=float, help="memory limit in MiB (default: none)")
    p.add_argument("--timeout", type=float, help="wall-clock seconds before the group is killed")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        p.error("no command")
    try:
        res = run(cmd, limit_bytes=int(a.limit_mib * MiB) if a.limit_mib else None, timeout=a.timeout)
    except CgroupError as e:
        print("cgroup.py: %s" % e, file=sys.stderr)
        return 2
    print(json.dumps(res, indent=1))
    return 0 if res["returncode"] == 0 else 1


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
