package vecmath

import (
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// impls lists every kernel set to test: the portable one, the accelerated ones this CPU can
// run, and the exported functions (whatever init chose).
func impls() []kernelSet {
	exported := kernelSet{
		name:        "exported(" + Impl() + ")",
		dot:         Dot,
		squaredL2:   SquaredL2,
		dotMany:     DotMany,
		l2Many:      SquaredL2Many,
		l1:          L1,
		dotU8:       DotU8,
		xorPopcount: XorPopcount,
		xorName:     "exported",
	}
	return append(append([]kernelSet{genericKernels}, simdKernels()...), exported)
}

// floatKernel is one float kernel of a set with its float64 reference.
type floatKernel struct {
	name string
	fn   func(a, b []byte) float32
	// ref returns the exact-ish value and Σ|terms| (for the tolerance).
	ref func(a, b []float32) (val, mag float64)
}

func floatKernels(k kernelSet) []floatKernel {
	return []floatKernel{
		{"Dot", k.dot, refDot},
		{"SquaredL2", k.squaredL2, refSquaredL2},
		{"L1", k.l1, refL1},
	}
}

func refDot(a, b []float32) (val, mag float64) {
	for i := range min(len(a), len(b)) {
		p := float64(a[i]) * float64(b[i])
		val += p
		mag += math.Abs(p)
	}
	return val, mag
}

func refSquaredL2(a, b []float32) (val, mag float64) {
	for i := range min(len(a), len(b)) {
		d := float64(a[i]) - float64(b[i])
		val += d * d
	}
	return val, val
}

func refL1(a, b []float32) (val, mag float64) {
	for i := range min(len(a), len(b)) {
		val += math.Abs(float64(a[i]) - float64(b[i]))
	}
	return val, val
}

func refXorPopcount(a, b []byte) uint64 {
	var n uint64
	for i := range min(len(a), len(b)) {
		n += uint64(bits.OnesCount8(a[i] ^ b[i]))
	}
	return n
}

// tolerance bounds the float32 summation error of any of the kernels over n elements whose
// terms have magnitude sum mag: recursive summation along chains of at most n/4 + 16 additions
// (generic: n/4 per accumulator plus tail and combination; avx2: fewer), each rounding by at
// most 2^-24, plus the rounding of each difference and product (3 units for squared L2).
func tolerance(n int, mag float64) float64 {
	return float64(n/4+20) * 0x1p-24 * mag
}

func randFloats(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.Float64()*2 - 1)
	}
	return v
}

// unaligned returns the encoding of v starting at byte offset off of a fresh buffer, so that
// the data is misaligned by off (mod 4) like values read in place from LMDB. The capacity ends
// with the data.
func unaligned(v []float32, off int) []byte {
	buf := make([]byte, off, off+4*len(v))
	buf = F32Bytes(buf, v)
	return buf[off:len(buf):len(buf)]
}

// testLengths are the vector lengths (in elements) the kernel tests use: every length up to
// 300, which covers every tail of the 8-, 16-, 32- and 64-element loops several times over,
// and the usual embedding sizes.
var testLengths = func() []int {
	var l []int
	for n := 0; n <= 300; n++ {
		l = append(l, n)
	}
	return append(l, 384, 768, 784, 1536, 4096)
}()

func TestFloatKernelsAgainstFloat64(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range testLengths {
		va, vb := randFloats(r, n), randFloats(r, n)
		for _, off := range []int{0, 1, 2, 3} {
			a, b := unaligned(va, off), unaligned(vb, (off+1)%4)
			for _, k := range impls() {
				for _, fk := range floatKernels(k) {
					want, mag := fk.ref(va, vb)
					got := fk.fn(a, b)
					if d := math.Abs(float64(got) - want); d > tolerance(n, mag) || math.IsNaN(d) {
						t.Errorf("%s %s n=%d off=%d: got %v, want %v (diff %g > tol %g)",
							k.name, fk.name, n, off, got, want, d, tolerance(n, mag))
					}
				}
			}
		}
	}
}

// TestDeterministic checks that a kernel gives the same bits for the same values, called
// again or with the data at another alignment.
func TestDeterministic(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{7, 33, 129, 768, 1536} {
		va, vb := randFloats(r, n), randFloats(r, n)
		for _, k := range impls() {
			for _, fk := range floatKernels(k) {
				first := math.Float32bits(fk.fn(unaligned(va, 0), unaligned(vb, 0)))
				for off := range 4 {
					for range 2 {
						got := math.Float32bits(fk.fn(unaligned(va, off), unaligned(vb, 3-off)))
						if got != first {
							t.Fatalf("%s %s n=%d off=%d: bits %#x, first call gave %#x",
								k.name, fk.name, n, off, got, first)
						}
					}
				}
			}
		}
	}
}

// TestSIMDMatchesGeneric compares the accelerated kernels with the portable ones directly.
func TestSIMDMatchesGeneric(t *testing.T) {
	simd := simdKernels()
	if len(simd) == 0 {
		t.Skipf("no accelerated kernels in this build or on this CPU (GOARCH=%s)", runtime.GOARCH)
	}
	r := rand.New(rand.NewPCG(5, 6))
	gen := floatKernels(genericKernels)
	for _, k := range simd {
		t.Logf("testing %s (XorPopcount: %s) against generic", k.name, k.xorName)
		for _, n := range testLengths {
			va, vb := randFloats(r, n), randFloats(r, n)
			a, b := unaligned(va, 1), unaligned(vb, 3)
			for i, fk := range floatKernels(k) {
				_, mag := fk.ref(va, vb)
				got, want := fk.fn(a, b), gen[i].fn(a, b)
				if d := math.Abs(float64(got) - float64(want)); d > 2*tolerance(n, mag) || math.IsNaN(d) {
					t.Errorf("%s %s n=%d: simd %v, generic %v", k.name, fk.name, n, got, want)
				}
			}
			// Raw random bytes for the bit kernel, and as 8-bit codes.
			ra, rb := make([]byte, 4*n+3), make([]byte, 4*n+3)
			fillRand(r, ra)
			fillRand(r, rb)
			for _, off := range []int{0, 1, 3} {
				c := ra[off : off+n]
				var mag float64
				for i := range n {
					mag += math.Abs(float64(va[i]) * float64(c[i]))
				}
				got, want := k.dotU8(va, c), dotU8Generic(va, c)
				if d := math.Abs(float64(got) - float64(want)); d > 2e-5*mag+1e-6 || math.IsNaN(d) {
					t.Errorf("%s DotU8 n=%d off=%d: simd %v, generic %v", k.name, n, off, got, want)
				}
			}
			for _, off := range []int{0, 1, 2, 3} {
				if got, want := k.xorPopcount(ra[off:], rb[3-off:]), xorPopcountGeneric(ra[off:], rb[3-off:]); got != want {
					t.Errorf("%s XorPopcount len=%d off=%d: simd %d, generic %d", k.name, 4*n+3, off, got, want)
				}
			}
		}
	}
}

func fillRand(r *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(r.Uint32())
	}
}

// TestManyMatchesOne checks that DotMany and SquaredL2Many give, for every vector, the bits
// of Dot and SquaredL2 of the same implementation on the vector from off on (0 for a vector
// shorter than off), fill only min(len(vs), len(out)) results, and accept vectors of any
// length, nil included.
func TestManyMatchesOne(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, k := range impls() {
		pairs := []struct {
			name string
			many func(q []byte, vs [][]byte, off int, out []float32)
			one  func(a, b []byte) float32
		}{{"DotMany", k.dotMany, k.dot}, {"SquaredL2Many", k.l2Many, k.squaredL2}}
		for _, n := range testLengths {
			q := unaligned(randFloats(r, n), 3)
			for _, off := range []int{0, 1, 5} {
				full := append(make([]byte, off), unaligned(randFloats(r, n), 1)...)
				vs := [][]byte{
					full,
					full[:max(len(full)-5, 0)], // shorter than q
					append(full[:len(full):len(full)], 1, 2, 3, 4, 5, 6, 7, 8), // longer than q
					full[:min(off, len(full))],                                 // nothing after off
					full[:min(off/2, len(full))],                               // shorter than off
					nil,
					unaligned(randFloats(r, n+1), 2),
				}
				for _, p := range pairs {
					out := make([]float32, len(vs)+1)
					sentinel := float32(math.NaN())
					out[len(vs)] = sentinel
					p.many(q, vs, off, out[:len(vs)])
					for i, v := range vs {
						want := p.one(q, from(v, off))
						if math.Float32bits(out[i]) != math.Float32bits(want) {
							t.Fatalf("%s %s n=%d off=%d vector %d: %v, one at a time %v", k.name, p.name, n, off, i, out[i], want)
						}
					}
					if !math.IsNaN(float64(out[len(vs)])) {
						t.Fatalf("%s %s wrote past the vectors", k.name, p.name)
					}
					short := []float32{sentinel, sentinel}
					p.many(q, vs, off, short[:1]) // fewer results than vectors
					if math.Float32bits(short[0]) != math.Float32bits(out[0]) || !math.IsNaN(float64(short[1])) {
						t.Fatalf("%s %s with one result: %v", k.name, p.name, short)
					}
					p.many(q, vs[:0], off, out) // no vectors: nothing written
					p.many(q, nil, off, nil)
				}
			}
		}
	}
}

func TestManyRefusesNegativeOffset(t *testing.T) {
	for _, f := range []func(){
		func() { DotMany(nil, nil, -1, nil) },
		func() { SquaredL2Many(nil, nil, -1, nil) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Error("a negative offset did not panic")
				}
			}()
			f()
		}()
	}
}

// TestExactIntegers checks exact results on small integer vectors, whose sums are exact in
// float32 in any order.
func TestExactIntegers(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, n := range testLengths {
		va, vb := make([]float32, n), make([]float32, n)
		var dot, l2, l1 int64
		for i := range n {
			x, y := int64(r.IntN(17)-8), int64(r.IntN(17)-8)
			va[i], vb[i] = float32(x), float32(y)
			dot += x * y
			l2 += (x - y) * (x - y)
			l1 += max(x-y, y-x)
		}
		want := map[string]float32{"Dot": float32(dot), "SquaredL2": float32(l2), "L1": float32(l1)}
		for _, off := range []int{0, 1, 2, 3} {
			a, b := unaligned(va, off), unaligned(vb, 3-off)
			for _, k := range impls() {
				for _, fk := range floatKernels(k) {
					if got := fk.fn(a, b); got != want[fk.name] {
						t.Errorf("%s %s n=%d off=%d: got %v, want exactly %v", k.name, fk.name, n, off, got, want[fk.name])
					}
				}
			}
		}
	}
	// A hand-checked case.
	a := F32Bytes(nil, []float32{1, 2, 3, 4, 5})
	b := F32Bytes(nil, []float32{2, 0, -1, 4, 1})
	for _, k := range impls() {
		if got := k.dot(a, b); got != 1*2+0-3+16+5 {
			t.Errorf("%s Dot = %v, want 20", k.name, got)
		}
		if got := k.squaredL2(a, b); got != 1+4+16+0+16 {
			t.Errorf("%s SquaredL2 = %v, want 37", k.name, got)
		}
		if got := k.l1(a, b); got != 1+2+4+0+4 {
			t.Errorf("%s L1 = %v, want 11", k.name, got)
		}
	}
}

// TestLengths checks mismatched lengths and odd byte counts: no panic, and the kernels use
// the common length rounded down to whole elements. Every byte past that point (inside the
// slices and in their spare capacity) is poison, NaN for the float kernels and differing bits
// for XorPopcount, so a kernel that read it would give a wrong result.
func TestLengths(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	const maxLen = 150
	va, vb := make([]float32, maxLen/4+1), make([]float32, maxLen/4+1)
	for i := range va {
		va[i], vb[i] = float32(r.IntN(9)-4), float32(r.IntN(9)-4)
	}
	lens := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 31, 32, 33, 35, 63, 64, 65, 127, 128, 129, 131, 132, 133, 147, 150}
	for _, la := range lens {
		for _, lb := range lens {
			n := min(la, lb) &^ 3
			m := n / 4
			for _, k := range impls() {
				for _, fk := range floatKernels(k) {
					a := poisoned(F32Bytes(nil, va), n, la, 0xff)
					b := poisoned(F32Bytes(nil, vb), n, lb, 0xff)
					want, _ := fk.ref(va[:m], vb[:m])
					if got := fk.fn(a, b); float64(got) != want {
						t.Errorf("%s %s len(a)=%d len(b)=%d: got %v, want %v", k.name, fk.name, la, lb, got, want)
					}
				}
				// XorPopcount counts every common byte, tail bytes included.
				ra, rb := make([]byte, maxLen), make([]byte, maxLen)
				fillRand(r, ra)
				fillRand(r, rb)
				nb := min(la, lb)
				want := refXorPopcount(ra[:nb], rb[:nb])
				a, b := poisoned(ra, nb, la, 0xff), poisoned(rb, nb, lb, 0x00)
				if got := k.xorPopcount(a, b); got != want {
					t.Errorf("%s XorPopcount len(a)=%d len(b)=%d: got %d, want %d", k.name, la, lb, got, want)
				}
			}
		}
	}
	for _, k := range impls() {
		for _, fk := range floatKernels(k) {
			if got := fk.fn(nil, nil); got != 0 {
				t.Errorf("%s %s(nil, nil) = %v", k.name, fk.name, got)
			}
			if got := fk.fn(F32Bytes(nil, []float32{1, 2}), nil); got != 0 {
				t.Errorf("%s %s(x, nil) = %v", k.name, fk.name, got)
			}
		}
		if got := k.xorPopcount(nil, []byte{0xff}); got != 0 {
			t.Errorf("%s XorPopcount(nil, x) = %d", k.name, got)
		}
	}
}

// poisoned returns a copy of src[:length] (zero-extended if src is shorter) in a buffer
// with 64 bytes of spare capacity, where every byte from index valid on (in the slice and in
// the spare capacity) is set to poison.
func poisoned(src []byte, valid, length int, poison byte) []byte {
	buf := make([]byte, length+64)
	copy(buf, src[:min(len(src), length)])
	for i := valid; i < len(buf); i++ {
		buf[i] = poison
	}
	return buf[:length]
}

func TestXorPopcount(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	var lens []int
	for n := 0; n <= 80; n++ {
		lens = append(lens, n)
	}
	// 128, 384, 768, 1536 and 16384 bits, and neighbours.
	lens = append(lens, 16, 48, 96, 192, 2048, 2047, 2049, 2055)
	for _, n := range lens {
		ra, rb := make([]byte, n+3), make([]byte, n+3)
		fillRand(r, ra)
		fillRand(r, rb)
		for _, off := range []int{0, 1, 2, 3} {
			a, b := ra[off:off+n], rb[3-off:3-off+n]
			want := refXorPopcount(a, b)
			for _, k := range impls() {
				if got := k.xorPopcount(a, b); got != want {
					t.Errorf("%s/%s XorPopcount n=%d off=%d: got %d, want %d", k.name, k.xorName, n, off, got, want)
				}
			}
		}
	}
	// All bits differ.
	ones, zeros := slices.Repeat([]byte{0xff}, 2051), make([]byte, 2051)
	for _, k := range impls() {
		if got := k.xorPopcount(ones, zeros); got != 8*2051 {
			t.Errorf("%s XorPopcount(ones, zeros) = %d, want %d", k.name, got, 8*2051)
		}
		if got := k.xorPopcount(ones, ones); got != 0 {
			t.Errorf("%s XorPopcount(ones, ones) = %d, want 0", k.name, got)
		}
	}
}

func TestF32BytesDecodeF32(t *testing.T) {
	v := []float32{0, -0, 1, -1.5, math.MaxFloat32, math.SmallestNonzeroFloat32, float32(math.Inf(-1)), 3.25}
	b := F32Bytes([]byte{9}, v)
	if len(b) != 1+4*len(v) || b[0] != 9 {
		t.Fatalf("F32Bytes did not append: len %d, first byte %d", len(b), b[0])
	}
	if got := b[1+4*2 : 1+4*3]; !slices.Equal(got, []byte{0x00, 0x00, 0x80, 0x3f}) {
		t.Errorf("encoding of 1.0 = % x, want 00 00 80 3f (little-endian)", got)
	}
	// Decode from an odd offset, with two trailing bytes that make no whole value.
	d := DecodeF32([]float32{42}, append(b[1:], 0xaa, 0xbb))
	if len(d) != 1+len(v) || d[0] != 42 {
		t.Fatalf("DecodeF32 did not append: %v", d)
	}
	for i := range v {
		if math.Float32bits(d[1+i]) != math.Float32bits(v[i]) {
			t.Errorf("value %d: got %v, want %v", i, d[1+i], v[i])
		}
	}
	if got := DecodeF32(nil, []byte{1, 2, 3}); len(got) != 0 {
		t.Errorf("DecodeF32 of 3 bytes = %v, want nothing", got)
	}
	if got := F32Bytes(nil, nil); len(got) != 0 {
		t.Errorf("F32Bytes(nil, nil) = %v", got)
	}
}

func TestImpl(t *testing.T) {
	t.Logf("Impl() = %q, XorPopcount %q, GOARCH=%s", Impl(), xorImplName, runtime.GOARCH)
	switch Impl() {
	case "avx512", "avx2+fma", "generic":
	default:
		t.Fatalf("Impl() = %q", Impl())
	}
	best := selectKernels()
	if Impl() != best.name || xorImplName != best.xorName {
		t.Errorf("Impl() = %q/%q, selectKernels chose %q/%q", Impl(), xorImplName, best.name, best.xorName)
	}
	// The best set this CPU can run comes first, and is the one in use.
	if s := simdKernels(); len(s) > 0 && Impl() != s[0].name {
		t.Errorf("%s available but Impl() = %q", s[0].name, Impl())
	}
}

// TestExpectedKernels checks the kernels chosen at start-up against HANNOY_EXPECT_KERNELS,
// "impl" or "impl/xor" (e.g. "avx2+fma" or "generic/generic"), which the Makefile sets next to
// a GODEBUG setting: it fails if the dispatch chose anything else, so a GODEBUG switch that
// stopped working would be caught. It skips when the variable is unset, and when this CPU (as
// filtered by GODEBUG) cannot run the expected kernels at all, e.g. avx2+fma on a CPU without
// AVX2.
func TestExpectedKernels(t *testing.T) {
	want := os.Getenv("HANNOY_EXPECT_KERNELS")
	if want == "" {
		t.Skip("HANNOY_EXPECT_KERNELS is not set")
	}
	wantImpl, wantXor, hasXor := strings.Cut(want, "/")
	sets := append([]kernelSet{genericKernels}, simdKernels()...)
	available := func(match func(kernelSet) bool) bool { return slices.ContainsFunc(sets, match) }
	if !available(func(k kernelSet) bool { return k.name == wantImpl }) {
		t.Skipf("this CPU cannot run the %q kernels (GODEBUG=%q)", wantImpl, os.Getenv("GODEBUG"))
	}
	if hasXor && !available(func(k kernelSet) bool { return k.xorName == wantXor }) {
		t.Skipf("this CPU cannot run the %q XorPopcount (GODEBUG=%q)", wantXor, os.Getenv("GODEBUG"))
	}
	if Impl() != wantImpl {
		t.Errorf("Impl() = %q with GODEBUG=%q, want %q", Impl(), os.Getenv("GODEBUG"), wantImpl)
	}
	if hasXor && xorImplName != wantXor {
		t.Errorf("XorPopcount is %q with GODEBUG=%q, want %q", xorImplName, os.Getenv("GODEBUG"), wantXor)
	}
}

// TestGODEBUGSelectsKernels runs this test binary again under each GODEBUG switch and checks,
// with TestExpectedKernels, which kernels it then chooses.
func TestGODEBUGSelectsKernels(t *testing.T) {
	if os.Getenv("HANNOY_EXPECT_KERNELS") != "" {
		t.Skip("in a subprocess, or under the Makefile's expectation")
	}
	if runtime.GOARCH != "amd64" {
		t.Skip("the cpu.* GODEBUG options of these kernels exist on amd64 only")
	}
	if testing.Short() {
		t.Skip("runs subprocesses")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	cases := []struct{ godebug, want string }{
		// AVX-512 off: the AVX2 kernels and POPCNT.
		{"cpu.avx512f=off", "avx2+fma/popcnt"},
		// AVX2 off: the portable float kernels; the AVX-512 ones need AVX2 too.
		{"cpu.avx2=off,cpu.fma=off", "generic/popcnt"},
		{"cpu.fma=off", "generic/popcnt"},
		// Everything off.
		{"cpu.avx2=off,cpu.fma=off,cpu.popcnt=off", "generic/generic"},
		// POPCNT off: the float kernels are unaffected; XorPopcount is portable.
		{"cpu.popcnt=off", Impl() + "/generic"},
	}
	// What this process (run without these switches) can run: a subprocess must not skip an
	// expectation this CPU can meet.
	sets := append([]kernelSet{genericKernels}, simdKernels()...)
	for _, c := range cases {
		wantImpl, wantXor, _ := strings.Cut(c.want, "/")
		canRun := slices.ContainsFunc(sets, func(k kernelSet) bool { return k.name == wantImpl }) &&
			slices.ContainsFunc(sets, func(k kernelSet) bool { return k.xorName == wantXor })
		cmd := exec.Command(exe, "-test.run=^TestExpectedKernels$", "-test.v")
		cmd.Env = append(os.Environ(), "GODEBUG="+c.godebug, "HANNOY_EXPECT_KERNELS="+c.want)
		out, err := cmd.CombinedOutput()
		switch passed := strings.Contains(string(out), "--- PASS: TestExpectedKernels"); {
		case err != nil:
			t.Errorf("GODEBUG=%s: %v\n%s", c.godebug, err, out)
		case !passed && canRun:
			t.Errorf("GODEBUG=%s: this CPU can run %s, but the subprocess did not check it:\n%s", c.godebug, c.want, out)
		case !passed:
			t.Logf("GODEBUG=%s: %s not checked, this CPU cannot run it", c.godebug, c.want)
		}
	}
}

var (
	sinkF float32
	sinkU uint64
)

// benchDims are the vector sizes of the float and DotU8 benchmarks: hannoy's usual embedding
// sizes (50-1536). Each size has one sub-benchmark per implementation this CPU can run, named
// implementation/size, so that one run compares them (e.g. -bench 'Dot/.*/768$').
var benchDims = []int{50, 128, 256, 768, 784, 1536}

func benchFloat(b *testing.B, pick func(kernelSet) func(a, b []byte) float32) {
	r := rand.New(rand.NewPCG(13, 14))
	sets := append([]kernelSet{genericKernels}, simdKernels()...)
	for _, dim := range benchDims {
		// Offset 1: misaligned, like vectors read in place from LMDB.
		x, y := unaligned(randFloats(r, dim), 1), unaligned(randFloats(r, dim), 1)
		for _, k := range sets {
			fn := pick(k)
			b.Run(fmt.Sprintf("%s/%d", k.name, dim), func(b *testing.B) {
				b.SetBytes(int64(8 * dim))
				for b.Loop() {
					sinkF = fn(x, y)
				}
			})
		}
	}
}

func BenchmarkDot(b *testing.B) {
	benchFloat(b, func(k kernelSet) func(a, b []byte) float32 { return k.dot })
}

func BenchmarkSquaredL2(b *testing.B) {
	benchFloat(b, func(k kernelSet) func(a, b []byte) float32 { return k.squaredL2 })
}

// BenchmarkMany compares one DotMany / SquaredL2Many call over 64 vectors scattered in 4 MiB
// with 64 calls of Dot / SquaredL2, at 50 and 784 dimensions (a search's hop).
func BenchmarkMany(b *testing.B) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, n := range []int{50, 784} {
		pool := make([]byte, 4<<20)
		fillRand(r, pool)
		q := unaligned(randFloats(r, n), 1)
		vs := make([][]byte, 64)
		for i := range vs {
			at := r.IntN(len(pool) - 4*n)
			vs[i] = F32Bytes(pool[at:at], randFloats(r, n))
		}
		out := make([]float32, len(vs))
		for _, p := range []struct {
			name string
			many func(q []byte, vs [][]byte, off int, out []float32)
			one  func(a, b []byte) float32
		}{{"Dot", DotMany, Dot}, {"SquaredL2", SquaredL2Many, SquaredL2}} {
			b.Run(fmt.Sprintf("%s/n=%d/one-at-a-time", p.name, n), func(b *testing.B) {
				for b.Loop() {
					for i, v := range vs {
						out[i] = p.one(q, v)
					}
				}
			})
			b.Run(fmt.Sprintf("%s/n=%d/many", p.name, n), func(b *testing.B) {
				for b.Loop() {
					p.many(q, vs, 0, out)
				}
			})
		}
	}
}

func BenchmarkL1(b *testing.B) {
	benchFloat(b, func(k kernelSet) func(a, b []byte) float32 { return k.l1 })
}

// BenchmarkXorPopcount times every XorPopcount implementation this CPU can run (generic,
// popcnt, vpopcntq), named implementation/bits.
func BenchmarkXorPopcount(b *testing.B) {
	r := rand.New(rand.NewPCG(15, 16))
	var sets []kernelSet
	for _, k := range append([]kernelSet{genericKernels}, simdKernels()...) {
		if !slices.ContainsFunc(sets, func(s kernelSet) bool { return s.xorName == k.xorName }) {
			sets = append(sets, k)
		}
	}
	for _, nbits := range []int{128, 256, 384, 768, 1024, 1536, 4096, 16384} {
		x, y := make([]byte, nbits/8+1), make([]byte, nbits/8+1)
		fillRand(r, x)
		fillRand(r, y)
		x, y = x[1:], y[1:]
		for _, k := range sets {
			fn := k.xorPopcount
			b.Run(fmt.Sprintf("%s/%d", k.xorName, nbits), func(b *testing.B) {
				b.SetBytes(int64(nbits / 4))
				for b.Loop() {
					sinkU = fn(x, y)
				}
			})
		}
	}
}

// TestDotU8 checks the weights-by-codes kernel of every kernel set against a float64 sum, at
// every length (the tails included) and for codes at any address; integer weights are exact.
func TestDotU8(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, k := range impls() {
		for _, n := range append(testLengths, 0, 1, 7, 8, 9, 31, 32, 33, 255, 256, 257, 784) {
			w := randFloats(r, n)
			raw := make([]byte, n+3)
			fillRand(r, raw)
			for _, off := range []int{0, 1, 3} {
				c := raw[off : off+n]
				var want, mag float64
				for i := range w {
					want += float64(w[i]) * float64(c[i])
					mag += math.Abs(float64(w[i]) * float64(c[i]))
				}
				got := k.dotU8(w, c)
				if d := math.Abs(float64(got) - want); d > 1e-5*mag+1e-6 {
					t.Errorf("%s n=%d off=%d: %v, want %v", k.name, n, off, got, want)
				}
				// Shorter codes than weights: only the common length counts.
				if n > 0 && k.dotU8(w, c[:n-1]) != k.dotU8(w[:n-1], c[:n-1]) {
					t.Errorf("%s n=%d: the lengths differ and more than the common length was read", k.name, n)
				}
			}
			iw := make([]float32, n)
			exact := float32(0)
			for i := range iw {
				iw[i] = float32(i%5 - 2)
				exact += iw[i] * float32(raw[i])
			}
			if got := k.dotU8(iw, raw[:n]); got != exact {
				t.Errorf("%s n=%d integers: %v, want %v", k.name, n, got, exact)
			}
		}
	}
}

func BenchmarkDotU8(b *testing.B) {
	r := rand.New(rand.NewPCG(19, 20))
	for _, n := range benchDims {
		w := randFloats(r, n)
		c := make([]byte, n+1)
		fillRand(r, c)
		c = c[1:]
		for _, k := range append([]kernelSet{genericKernels}, simdKernels()...) {
			fn := k.dotU8
			b.Run(fmt.Sprintf("%s/%d", k.name, n), func(b *testing.B) {
				for b.Loop() {
					sinkF = fn(w, c)
				}
			})
		}
	}
}

// inBuffer returns the encoding of v at byte offset off of a buffer whose remaining bytes,
// before and after the data (in its spare capacity), are poison: NaN for the float kernels.
func inBuffer(v []float32, off int, poison byte) []byte {
	buf := slices.Repeat([]byte{poison}, off+4*len(v)+64)
	F32Bytes(buf[off:off], v)
	return buf[off : off+4*len(v)]
}

// TestTailExact puts large, distinct integers in the last 16 elements (the masked or scalar
// tail of every implementation) and small ones before them, with NaN bytes right after the
// data: every sum is an integer below 2^24, exact in any order, so a kernel that dropped,
// repeated or mismatched a tail element, or read past the end, gives a wrong result.
func TestTailExact(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	for _, n := range testLengths {
		va, vb := make([]float32, n), make([]float32, n)
		w, codes := make([]float32, n), make([]byte, n)
		var dot, l2, l1, u8 int64
		for i := range n {
			x, y, c, wi := int64(r.IntN(9)-4), int64(r.IntN(9)-4), int64(r.IntN(256)), int64(r.IntN(5)-2)
			if k := int64(n - i); k <= 16 { // the last 16 elements
				x, y, c, wi = 256+3*k, -(300 + 5*k), 255-k, 100+k
			}
			va[i], vb[i], codes[i], w[i] = float32(x), float32(y), byte(c), float32(wi)
			dot += x * y
			l2 += (x - y) * (x - y)
			l1 += max(x-y, y-x)
			u8 += wi * c
		}
		want := map[string]float32{"Dot": float32(dot), "SquaredL2": float32(l2), "L1": float32(l1)}
		for _, off := range []int{0, 1, 2, 3} {
			a, b := inBuffer(va, off, 0xff), inBuffer(vb, 3-off, 0xff)
			c := append(make([]byte, off, off+n+64), codes...)[off:]
			for _, k := range impls() {
				for _, fk := range floatKernels(k) {
					if got := fk.fn(a, b); got != want[fk.name] {
						t.Errorf("%s %s n=%d off=%d: got %v, want exactly %v", k.name, fk.name, n, off, got, want[fk.name])
					}
				}
				if got := k.dotU8(w, c); got != float32(u8) {
					t.Errorf("%s DotU8 n=%d off=%d: got %v, want exactly %v", k.name, n, off, got, float32(u8))
				}
			}
		}
	}
}

// TestXorPopcountTail sets the last (up to) 64 bytes to differ in every bit, and the bytes
// before them to be equal, at every byte length up to 1,200 and a few long ones, with
// differing bytes right after the data: the count must be exactly 8 per tail byte.
func TestXorPopcountTail(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 24))
	lens := make([]int, 0, 1210)
	for n := 0; n <= 1200; n++ {
		lens = append(lens, n)
	}
	lens = append(lens, 2047, 2048, 2049, 16383, 16384, 16385)
	for _, n := range lens {
		for _, off := range []int{0, 3} {
			a := make([]byte, off+n+64)
			fillRand(r, a)
			b := slices.Clone(a)
			for i := max(off+n-64, off); i < len(b); i++ {
				b[i] = ^a[i] // the tail, and the poison after the data
			}
			want := uint64(8 * min(n, 64))
			for _, k := range impls() {
				if got := k.xorPopcount(a[off:off+n], b[off:off+n]); got != want {
					t.Errorf("%s/%s XorPopcount n=%d off=%d: got %d, want %d", k.name, k.xorName, n, off, got, want)
				}
			}
		}
	}
}

func TestAllFinite(t *testing.T) {
	bad := []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)),
		math.Float32frombits(0x7fc00001), math.Float32frombits(0xff800001)}
	good := []float32{0, -0.0, 1, -1, math.MaxFloat32, -math.MaxFloat32, math.SmallestNonzeroFloat32,
		math.Float32frombits(0x7f7fffff), math.Float32frombits(0x00800000), math.Float32frombits(0x807fffff)}
	buf := make([]float32, 40)
	for n := 0; n <= 19; n++ {
		for off := 0; off <= 1; off++ { // 8-byte aligned and not
			v := buf[off : off+n]
			for i := range v {
				v[i] = good[(i*7+n)%len(good)]
			}
			if !AllFinite(v) {
				t.Fatalf("n=%d off=%d: finite values reported not finite", n, off)
			}
			for pos := 0; pos < n; pos++ {
				for _, b := range bad {
					old := v[pos]
					v[pos] = b
					if AllFinite(v) {
						t.Fatalf("n=%d off=%d: %v at %d not found", n, off, b, pos)
					}
					v[pos] = old
				}
			}
		}
	}
}
