//go:build linux

package vecmath

import (
	"math/rand/v2"
	"syscall"
	"testing"
)

// guarded maps three pages and makes the first and the last inaccessible, so that a read just
// before or just after the middle page faults. It returns the middle page.
func guarded(t *testing.T) []byte {
	t.Helper()
	ps := syscall.Getpagesize()
	mem, err := syscall.Mmap(-1, 0, 3*ps, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Skipf("mmap: %v", err)
	}
	t.Cleanup(func() { syscall.Munmap(mem) })
	if err := syscall.Mprotect(mem[:ps], syscall.PROT_NONE); err != nil {
		t.Skipf("mprotect: %v", err)
	}
	if err := syscall.Mprotect(mem[2*ps:], syscall.PROT_NONE); err != nil {
		t.Skipf("mprotect: %v", err)
	}
	return mem[ps : 2*ps : 2*ps]
}

// TestNoOutOfBoundsRead puts the inputs against inaccessible pages, at the start and at the
// end of a readable page, with every byte length up to 200 and some longer ones: a kernel
// that read a byte too many (or too early) would crash the test.
func TestNoOutOfBoundsRead(t *testing.T) {
	pa, pb := guarded(t), guarded(t)
	r := rand.New(rand.NewPCG(17, 18))
	fillRand(r, pa)
	fillRand(r, pb)
	ps := len(pa)
	var lens []int
	for n := 0; n <= 200; n++ {
		lens = append(lens, n)
	}
	lens = append(lens, 512, 1023, 3072, 3073, 6144, ps-1, ps)
	for _, n := range lens {
		if n > ps {
			continue
		}
		for _, skew := range []int{0, 1, 5} { // the other input is a little longer
			m := max(n-skew, 0)
			cases := [][2][]byte{
				{pa[ps-n:], pb[ps-m:]}, // ending at the guard page
				{pa[:n:n], pb[:m:m]},   // starting after the guard page
				{pa[ps-m:], pb[:n:n]},  // mixed
			}
			for _, c := range cases {
				a, b := c[0], c[1]
				for _, k := range impls() {
					// Random bytes may encode NaNs: compare bits with the generic kernels only
					// where it is meaningful, and mainly check that nothing faults.
					_ = k.dot(a, b)
					_ = k.squaredL2(a, b)
					_ = k.l1(a, b)
					_ = k.dot(b, a)
					out := make([]float32, 3)
					for _, off := range []int{0, 1, 4} {
						k.dotMany(a, [][]byte{b, a, b}, off, out)
						k.l2Many(b, [][]byte{a, b, a}, off, out)
					}
					// Codes against the guard pages; the weights are ordinary memory.
					w := make([]float32, len(b))
					_ = k.dotU8(w, a)
					_ = k.dotU8(append(w, 0, 0, 0), b)
					if got, want := k.xorPopcount(a, b), refXorPopcount(a, b); got != want {
						t.Errorf("%s XorPopcount n=%d skew=%d: got %d, want %d", k.name, n, skew, got, want)
					}
				}
			}
		}
	}
}

// TestPrefetchAllNeverFaults prefetches slices that end at, or start after, an inaccessible
// page, and a nil slice: prefetching is a hint and must never fault or read.
func TestPrefetchAllNeverFaults(t *testing.T) {
	p := guarded(t)
	ps := len(p)
	PrefetchAll(nil)
	Prefetch(nil)
	for _, n := range []int{0, 1, 63, 64, 65, 200, 3137, ps - 1, ps} {
		PrefetchAll(p[ps-n:])
		PrefetchAll(p[:n:n])
		Prefetch(p[ps-n:])
	}
}
