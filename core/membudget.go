package core

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
)

// MemoryBudgetEnv is the environment variable that sets the memory budget (in bytes, or with a
// K, M, G or T suffix for powers of 1024) when Options.MemoryBudget is 0.
const MemoryBudgetEnv = "HANNOY_MEMORY_BUDGET"

// MemoryInfo is what the process may use, as read from the kernel.
type MemoryInfo struct {
	// Available is the memory this process may still fill with file pages and its own data:
	// the smallest of MemAvailable and, for each memory cgroup it is in (and their parents),
	// the group's limit less the anonymous memory the group holds. math.MaxInt64 when unknown.
	Available int64
	// MemAvailable is the kernel's estimate from /proc/meminfo (-1 if unreadable).
	MemAvailable int64
	// CgroupLimit is the tightest memory-cgroup limit of the process (-1 if none).
	CgroupLimit int64
	// CgroupAnon is the anonymous memory of that group (-1 if unknown).
	CgroupAnon int64
}

// ReadMemoryInfo reads the memory this process may use: cgroup v1 (memory.limit_in_bytes,
// memory.stat total_rss) or v2 (memory.max, memory.stat anon) for the process's group and its
// parents, and MemAvailable.
func ReadMemoryInfo() MemoryInfo { return readMemoryInfo("/") }

// readMemoryInfo reads the files under root (a test passes a fake tree).
func readMemoryInfo(root string) MemoryInfo {
	info := MemoryInfo{Available: math.MaxInt64, MemAvailable: -1, CgroupLimit: -1, CgroupAnon: -1}
	if v, ok := meminfoField(filepath.Join(root, "proc/meminfo"), "MemAvailable:"); ok {
		info.MemAvailable = v
		info.Available = v
	}
	for _, g := range memoryCgroups(root) {
		limit, anon, ok := g.read()
		if !ok {
			continue
		}
		if info.CgroupLimit < 0 || limit < info.CgroupLimit {
			info.CgroupLimit, info.CgroupAnon = limit, anon
		}
		if free := max(limit-max(anon, 0), 0); free < info.Available {
			info.Available = free
		}
	}
	return info
}

// cgroupDir is a memory cgroup directory of the process (or a parent of it) and its version.
type cgroupDir struct {
	dir string
	v2  bool
}

// read returns the group's limit and anonymous memory; ok is false without a limit.
func (g cgroupDir) read() (limit, anon int64, ok bool) {
	limitFile, anonKey := "memory.limit_in_bytes", "total_rss"
	if g.v2 {
		limitFile, anonKey = "memory.max", "anon"
	}
	b, err := os.ReadFile(filepath.Join(g.dir, limitFile))
	if err != nil {
		return 0, 0, false
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, 0, false
	}
	limit, err = strconv.ParseInt(s, 10, 64)
	// cgroup v1 writes "no limit" as the largest page-aligned int64.
	if err != nil || limit <= 0 || limit >= math.MaxInt64/2 {
		return 0, 0, false
	}
	anon = -1
	if f, err := os.Open(filepath.Join(g.dir, "memory.stat")); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, found := strings.Cut(sc.Text(), " ")
			if found && k == anonKey {
				if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
					anon = n
				}
				break
			}
		}
		f.Close()
	}
	return limit, anon, true
}

// memoryCgroups lists the memory cgroup directories of the process, innermost first, up to the
// hierarchy's root: every one of them limits it.
func memoryCgroups(root string) []cgroupDir {
	b, err := os.ReadFile(filepath.Join(root, "proc/self/cgroup"))
	if err != nil {
		return nil
	}
	var out []cgroupDir
	add := func(base, rel string, v2 bool) {
		rel = filepath.Clean("/" + rel)
		for {
			out = append(out, cgroupDir{filepath.Join(base, rel), v2})
			if rel == "/" {
				return
			}
			rel = filepath.Dir(rel)
		}
	}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			// cgroup v2: the unified hierarchy, when the memory controller is on it.
			base := filepath.Join(root, "sys/fs/cgroup")
			if _, err := os.Stat(filepath.Join(base, "cgroup.controllers")); err == nil {
				add(base, parts[2], true)
			}
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "memory" {
				add(filepath.Join(root, "sys/fs/cgroup/memory"), parts[2], false)
			}
		}
	}
	return out
}

// meminfoField reads one "Key: N kB" line of /proc/meminfo, in bytes.
func meminfoField(path, key string) (int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte(key)); ok {
			f := strings.Fields(string(rest))
			if len(f) == 0 {
				return 0, false
			}
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, false
			}
			if len(f) > 1 && f[1] == "kB" {
				n *= 1024
			}
			return n, true
		}
	}
	return 0, false
}

// ParseMemorySize parses a size in bytes: digits with an optional K, M, G or T suffix (powers
// of 1024, an optional trailing "B" or "iB"), e.g. "512M" or "1GiB".
func ParseMemorySize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "IB"), "B")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			t = strings.TrimSpace(t[:n-1])
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("memory size %q: want a positive number of bytes, optionally with K, M, G or T", s)
	}
	return n * mult, nil
}

// budgetShare is the part of the available memory a reader plans to fill: the rest is left
// for the process's own data and other files.
const budgetShare = 0.8

// memoryBudget is the budget in force: explicit (> 0) if given, else MemoryBudgetEnv if set
// and valid, else budgetShare of what ReadMemoryInfo finds available.
func memoryBudget(explicit int64) (budget int64, source string) {
	if explicit > 0 {
		return explicit, "explicit"
	}
	if s := os.Getenv(MemoryBudgetEnv); s != "" {
		if n, err := ParseMemorySize(s); err == nil {
			return n, "environment"
		}
	}
	avail := ReadMemoryInfo().Available
	if avail == math.MaxInt64 {
		return math.MaxInt64, "unlimited"
	}
	return int64(float64(avail) * budgetShare), "automatic"
}

// goLimitMu guards the Go runtime's soft memory limit while builds lower it.
var (
	goLimitMu     sync.Mutex
	goLimitUsers  int
	goLimitBefore int64
)

// goHeapCap is a lowered Go soft memory limit held by a build (see capGoHeap).
type goHeapCap struct {
	held int64 // what the Go runtime held when the build began
	done bool
}

// capGoHeap lowers the Go runtime's soft memory limit (debug.SetMemoryLimit) to what the Go
// runtime holds now plus budget, for the length of a build: without it the collector lets the
// heap grow to twice what is live before it runs, and under a memory limit that headroom is the
// page cache the build reads through, or the margin before the kernel kills the process. A
// limit set before (GOMEMLIMIT) is kept if it is lower. Concurrent builds share the lowest
// limit; the last to finish restores the one from before. nil (no cap) for an unlimited
// budget; the methods accept nil.
func capGoHeap(budget int64) *goHeapCap {
	if budget <= 0 || budget == math.MaxInt64 {
		return nil
	}
	// Measured after a collection, so that garbage and idle spans do not count as held.
	debug.FreeOSMemory()
	samples := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(samples)
	c := &goHeapCap{}
	if samples[0].Value.Kind() == metrics.KindUint64 && samples[1].Value.Kind() == metrics.KindUint64 {
		c.held = int64(samples[0].Value.Uint64() - samples[1].Value.Uint64())
	}
	goLimitMu.Lock()
	defer goLimitMu.Unlock()
	if goLimitUsers == 0 {
		goLimitBefore = debug.SetMemoryLimit(-1)
	}
	goLimitUsers++
	c.lowerLocked(budget)
	return c
}

// lower lowers the limit to what the runtime held at the start plus need, once the build knows
// what it needs (never raises it).
func (c *goHeapCap) lower(need int64) {
	if c == nil {
		return
	}
	goLimitMu.Lock()
	defer goLimitMu.Unlock()
	c.lowerLocked(need)
}

func (c *goHeapCap) lowerLocked(need int64) {
	if c.done {
		return
	}
	limit := c.held + need
	if limit > c.held && limit < debug.SetMemoryLimit(-1) {
		debug.SetMemoryLimit(limit)
	}
}

// restore ends the cap; the last build to end restores the limit from before the first.
func (c *goHeapCap) restore() {
	if c == nil {
		return
	}
	goLimitMu.Lock()
	defer goLimitMu.Unlock()
	if c.done {
		return
	}
	c.done = true
	goLimitUsers--
	if goLimitUsers == 0 {
		debug.SetMemoryLimit(goLimitBefore)
	}
}
