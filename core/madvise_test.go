package core

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// resident counts the pages of b that are in memory.
func resident(t *testing.T, b []byte) int {
	t.Helper()
	vec := make([]byte, (len(b)+int(pageSize)-1)/int(pageSize))
	if err := mincore(uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), vec); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}

// TestWillNeedPaced checks that a paced warm-up reads a whole mapped file in, and that it
// returns when its range is not mapped.
func TestWillNeedPaced(t *testing.T) {
	const size = 24 << 20 // three times the window
	path := filepath.Join(t.TempDir(), "f")
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Written pages are clean after fsync, and then can be dropped from the page cache.
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, size, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	m, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	mapped := true
	defer func() {
		if mapped {
			_ = syscall.Munmap(m)
		}
	}()
	pages := size / int(pageSize)
	before := resident(t, m)
	willNeedPaced(uintptr(unsafe.Pointer(&m[0])), size)
	// The last window is still being read when it returns.
	got := resident(t, m)
	for deadline := time.Now().Add(10 * time.Second); got != pages && time.Now().Before(deadline); got = resident(t, m) {
		time.Sleep(10 * time.Millisecond)
	}
	if got != pages {
		t.Fatalf("%d of %d pages in memory after the warm-up (%d before)", got, pages, before)
	}
	if last := size - 1; m[last] != byte(last*7) {
		t.Fatal("the warm-up changed the file's contents")
	}
	start := uintptr(unsafe.Pointer(&m[0]))
	if err := syscall.Munmap(m); err != nil {
		t.Fatal(err)
	}
	mapped = false
	// mincore fails on the unmapped range: it returns at the first wait, not after
	// residentWait for each of its chunks.
	t0 := time.Now()
	willNeedPaced(start, size)
	if took := time.Since(t0); took >= residentWait {
		t.Fatalf("the warm-up of an unmapped range took %v", took)
	}
}
