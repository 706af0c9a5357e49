package core

import (
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

// fakeTree writes files (path -> content) under a temporary root.
func fakeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

const meminfo = "MemTotal:       24000000 kB\nMemFree:         1000 kB\nMemAvailable:    8000000 kB\n"

func TestMemoryInfoCgroupV1(t *testing.T) {
	root := fakeTree(t, map[string]string{
		"proc/meminfo":     meminfo,
		"proc/self/cgroup": "5:devices:/\n4:memory:/outer/inner\n1:cpu,cpuacct:/\n",
		// The inner group has no limit of its own; its parent's applies.
		"sys/fs/cgroup/memory/outer/inner/memory.limit_in_bytes": "9223372036854771712\n",
		"sys/fs/cgroup/memory/outer/inner/memory.stat":           "cache 100\nrss 5\ntotal_rss 7\n",
		"sys/fs/cgroup/memory/outer/memory.limit_in_bytes":       "536870912\n",
		"sys/fs/cgroup/memory/outer/memory.stat":                 "cache 4096\nrss 1000\ntotal_cache 9\ntotal_rss 100663296\n",
		"sys/fs/cgroup/memory/memory.limit_in_bytes":             "9223372036854771712\n",
	})
	info := readMemoryInfo(root)
	if info.MemAvailable != 8000000*1024 || info.CgroupLimit != 512<<20 || info.CgroupAnon != 96<<20 {
		t.Fatalf("%+v", info)
	}
	if info.Available != (512-96)<<20 {
		t.Fatalf("available %d, want the limit less the group's anonymous memory", info.Available)
	}
}

func TestMemoryInfoCgroupV2(t *testing.T) {
	root := fakeTree(t, map[string]string{
		"proc/meminfo":                             meminfo,
		"proc/self/cgroup":                         "0::/user.slice/job\n",
		"sys/fs/cgroup/cgroup.controllers":         "cpu memory\n",
		"sys/fs/cgroup/user.slice/job/memory.max":  "max\n",
		"sys/fs/cgroup/user.slice/memory.max":      "1073741824\n",
		"sys/fs/cgroup/user.slice/memory.stat":     "anon 2000\nfile 5000\n",
		"sys/fs/cgroup/user.slice/job/memory.stat": "anon 1000\n",
	})
	info := readMemoryInfo(root)
	if info.CgroupLimit != 1<<30 || info.CgroupAnon != 2000 || info.Available != 1<<30-2000 {
		t.Fatalf("%+v", info)
	}
	// MemAvailable wins when it is the smaller.
	root = fakeTree(t, map[string]string{
		"proc/meminfo":                     "MemAvailable: 1000 kB\n",
		"proc/self/cgroup":                 "0::/\n",
		"sys/fs/cgroup/cgroup.controllers": "memory\n",
		"sys/fs/cgroup/memory.max":         "1073741824\n",
	})
	if info := readMemoryInfo(root); info.Available != 1000*1024 || info.CgroupAnon != -1 {
		t.Fatalf("%+v", info)
	}
}

func TestMemoryInfoNothingKnown(t *testing.T) {
	info := readMemoryInfo(t.TempDir())
	if info.Available != math.MaxInt64 || info.CgroupLimit != -1 || info.MemAvailable != -1 {
		t.Fatalf("%+v", info)
	}
	if b, src := memoryBudget(123); b != 123 || src != "explicit" {
		t.Fatalf("explicit budget: %d %s", b, src)
	}
	// This machine: whatever it is, a budget comes out positive.
	if b, src := memoryBudget(0); b <= 0 || src == "" {
		t.Fatalf("budget %d from %q", b, src)
	}
}

// A build under a budget lowers the Go runtime's soft memory limit for its length; overlapping
// builds share it and the last one restores what was set before; an unlimited budget leaves it.
func TestCapGoHeap(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(before)
	debug.SetMemoryLimit(math.MaxInt64)

	if c := capGoHeap(math.MaxInt64); c != nil {
		t.Fatal("an unlimited budget capped the heap")
	}
	c1 := capGoHeap(64 << 20)
	first := debug.SetMemoryLimit(-1)
	if first == math.MaxInt64 || first < 64<<20 {
		t.Fatalf("limit %d under a 64 MiB budget: want what the runtime holds plus 64 MiB", first)
	}
	c2 := capGoHeap(1 << 40) // a higher one does not raise it
	if got := debug.SetMemoryLimit(-1); got != first {
		t.Fatalf("a second, larger budget changed the limit: %d, want %d", got, first)
	}
	c1.lower(32 << 20) // the build knows what it needs: lowered, never raised
	lowered := debug.SetMemoryLimit(-1)
	if lowered != first-32<<20 {
		t.Fatalf("lowered to %d, want %d", lowered, first-32<<20)
	}
	c1.lower(48 << 20)
	if got := debug.SetMemoryLimit(-1); got != lowered {
		t.Fatalf("lower raised the limit to %d", got)
	}
	c1.restore()
	c1.restore() // twice is once
	if got := debug.SetMemoryLimit(-1); got != lowered {
		t.Fatalf("the limit was restored while a build still runs: %d", got)
	}
	c2.restore()
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Fatalf("the last build did not restore the limit: %d", got)
	}
	// A GOMEMLIMIT lower than the build's own is kept.
	debug.SetMemoryLimit(1 << 20)
	c := capGoHeap(64 << 20)
	if got := debug.SetMemoryLimit(-1); got != 1<<20 {
		t.Fatalf("a lower limit set before was raised to %d", got)
	}
	c.restore()
	var none *goHeapCap
	none.lower(1)
	none.restore()
}
