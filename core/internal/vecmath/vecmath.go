// Package vecmath holds the distance kernels of the HNSW engine.
//
// Vectors are stored in LMDB as raw little-endian bytes and are read in place, so their float
// data is usually not 4-byte aligned. Every kernel therefore takes []byte, never []float32, and
// the assembly kernels use unaligned loads only.
//
// # Lengths
//
// A kernel works on n = min(len(a), len(b)) bytes rounded down to a whole element: 4 bytes for
// the float kernels (Dot, SquaredL2, L1). XorPopcount counts all n bytes, tail bytes included.
// Bytes beyond n are ignored and never read, whatever the
// lengths, so corrupt or truncated data cannot make a kernel read out of bounds. Empty input
// gives 0.
//
// # Implementations
//
// The implementation is chosen once, at package initialisation, from the CPU features that
// golang.org/x/sys/cpu reports (after GODEBUG, below):
//
//   - "avx512": Go assembly for amd64 CPUs with AVX2, FMA, AVX512F and AVX512VL whose OS saves
//     the AVX-512 state: the AVX2 body, then the last 0-7 floats with one masked load instead
//     of a scalar loop; DotU8 on 16-lane registers (16-lane bodies for Dot, SquaredL2 and L1
//     were measured no faster than AVX2's on AMD Zen 4, and are not used);
//   - "avx2+fma": Go assembly for amd64 with AVX2 and FMA (four independent 8-lane accumulators,
//     32 floats per iteration, then 8-float steps, then a scalar tail);
//   - "generic": portable Go with four scalar accumulators, used on other architectures, on
//     amd64 CPUs without AVX2/FMA, and whenever the package is built with the purego tag.
//
// The levels nest like x86-64-v3 and v4: "avx512" also requires AVX2 and FMA.
//
// XorPopcount has its own choice: VPOPCNTQ over 64-byte blocks with a byte-masked tail
// ("vpopcntq") when the float kernels are "avx512" and the CPU also has AVX512BW,
// AVX512_VPOPCNTDQ and POPCNT; otherwise the POPCNT instruction ("popcnt") whenever the CPU has
// it, whatever the float kernels; otherwise math/bits. All three give the same counts.
//
// # GODEBUG
//
// golang.org/x/sys/cpu honours GODEBUG's cpu.* switches (as the runtime does), so a program or
// a test can turn the fast paths off:
//
//   - GODEBUG=cpu.avx512f=off: no AVX-512 kernels ("avx2+fma" and "popcnt" instead);
//   - GODEBUG=cpu.avx2=off or cpu.fma=off: the generic float kernels (and no AVX-512 either);
//   - GODEBUG=cpu.popcnt=off: the portable XorPopcount.
//
// Switches combine with commas (cpu.avx2=off,cpu.fma=off,cpu.popcnt=off gives all portable
// kernels). Building with -tags purego removes the assembly altogether.
//
// # Determinism
//
// For a given implementation, the float kernels always sum in the same order, so the same
// inputs give the same bits. The implementations sum in different orders (and the assembly
// fuses multiply-adds), so their results may differ in the last bits. The generic kernels round
// every product before adding it (no fused multiply-add), so they give the same bits on every
// architecture.
package vecmath

import (
	"encoding/binary"
	"math"
	"slices"
	"unsafe"
)

// The kernels in use, chosen by init (see selectKernels in the platform files).
var (
	dotImpl         = dotGeneric
	squaredL2Impl   = squaredL2Generic
	dotManyImpl     = dotManyGeneric
	l2ManyImpl      = squaredL2ManyGeneric
	l1Impl          = l1Generic
	dotU8Impl       = dotU8Generic
	xorPopcountImpl = xorPopcountGeneric
	implName        = "generic"
	xorImplName     = "generic"
)

// kernelSet is one implementation of the float kernels (and its XorPopcount).
type kernelSet struct {
	name        string
	dot         func(a, b []byte) float32
	squaredL2   func(a, b []byte) float32
	dotMany     func(q []byte, vs [][]byte, off int, out []float32) // Dot over many vectors
	l2Many      func(q []byte, vs [][]byte, off int, out []float32) // SquaredL2 over many vectors
	l1          func(a, b []byte) float32
	dotU8       func(w []float32, c []byte) float32
	xorPopcount func(a, b []byte) uint64
	xorName     string // "vpopcntq", "popcnt" or "generic": XorPopcount is chosen independently
}

var genericKernels = kernelSet{
	name:        "generic",
	dot:         dotGeneric,
	squaredL2:   squaredL2Generic,
	dotMany:     dotManyGeneric,
	l2Many:      squaredL2ManyGeneric,
	l1:          l1Generic,
	dotU8:       dotU8Generic,
	xorPopcount: xorPopcountGeneric,
	xorName:     "generic",
}

func init() {
	k := selectKernels()
	dotImpl = k.dot
	squaredL2Impl = k.squaredL2
	dotManyImpl = k.dotMany
	l2ManyImpl = k.l2Many
	l1Impl = k.l1
	dotU8Impl = k.dotU8
	xorPopcountImpl = k.xorPopcount
	implName = k.name
	xorImplName = k.xorName
}

// Dot returns Σ a[i]*b[i] over the float32 little-endian values in a and b.
//
// It uses n = min(len(a), len(b)) bytes rounded down to a multiple of 4; empty input gives 0.
func Dot(a, b []byte) float32 { return dotImpl(a, b) }

// SquaredL2 returns Σ (a[i]-b[i])² over the float32 little-endian values in a and b.
//
// It uses n = min(len(a), len(b)) bytes rounded down to a multiple of 4; empty input gives 0.
func SquaredL2(a, b []byte) float32 { return squaredL2Impl(a, b) }

// DotMany sets out[i] = Dot(q, vs[i][off:]) for every i below min(len(vs), len(out)), and
// out[i] = 0 where vs[i] is shorter than off: the same bits as Dot, in one call. The assembly
// kernels keep the loop in the kernel (no call per vector), first ask the CPU for the first
// 256 bytes of every vector (as Prefetch does), then for the rest of each next vector while
// they compute one. It panics if off is negative.
func DotMany(q []byte, vs [][]byte, off int, out []float32) {
	if off < 0 {
		panic("vecmath: negative offset")
	}
	dotManyImpl(q, vs, off, out)
}

// SquaredL2Many is DotMany for SquaredL2: out[i] = SquaredL2(q, vs[i][off:]).
func SquaredL2Many(q []byte, vs [][]byte, off int, out []float32) {
	if off < 0 {
		panic("vecmath: negative offset")
	}
	l2ManyImpl(q, vs, off, out)
}

// L1 returns Σ |a[i]-b[i]| over the float32 little-endian values in a and b.
//
// It uses n = min(len(a), len(b)) bytes rounded down to a multiple of 4; empty input gives 0.
func L1(a, b []byte) float32 { return l1Impl(a, b) }

// DotU8 returns Σ w[i]*float32(c[i]) over n = min(len(w), len(c)): a query's weights against
// 8-bit codes. Empty input gives 0.
func DotU8(w []float32, c []byte) float32 { return dotU8Impl(w, c) }

// XorPopcount returns the number of differing bits between a and b (binary vectors packed in
// little-endian u64 words).
//
// It compares n = min(len(a), len(b)) bytes: whole 8-byte words first, then any remaining tail
// bytes one by one. Empty input gives 0.
func XorPopcount(a, b []byte) uint64 { return xorPopcountImpl(a, b) }

// Impl names the implementation of the float kernels (Dot, SquaredL2, L1, DotU8) chosen at
// start-up: "avx512", "avx2+fma" or "generic".
func Impl() string { return implName }

// littleEndian is true on the machines this package is built for (amd64, arm64): a float32's
// encoding is then its bytes in memory.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// F32Bytes appends the little-endian encoding of v to dst and returns the extended slice.
func F32Bytes(dst []byte, v []float32) []byte {
	if littleEndian && len(v) > 0 {
		return append(dst, unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))...)
	}
	dst = slices.Grow(dst, 4*len(v))
	for _, f := range v {
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(f))
	}
	return dst
}

// AllFinite reports whether no value of v is NaN or infinite. It reads two values per 64-bit
// word without a branch: a float32 is NaN or infinite exactly when its exponent bits are all
// ones, and adding 1 to an exponent field of all ones carries into the value's sign bit.
func AllFinite(v []float32) bool {
	const exp2, one2, sign2 = 0x7f800000_7f800000, 0x00800000_00800000, 0x80000000_80000000
	var acc uint64
	if len(v) > 0 && uintptr(unsafe.Pointer(&v[0]))%8 != 0 {
		acc = uint64(math.Float32bits(v[0])&0x7f800000 + 0x00800000) // words start 8-byte aligned
		v = v[1:]
	}
	n := len(v) / 2
	if n > 0 {
		w := unsafe.Slice((*uint64)(unsafe.Pointer(&v[0])), n)
		i := 0
		for ; i+4 <= n; i += 4 {
			acc |= (w[i]&exp2 + one2) | (w[i+1]&exp2 + one2) | (w[i+2]&exp2 + one2) | (w[i+3]&exp2 + one2)
		}
		for ; i < n; i++ {
			acc |= w[i]&exp2 + one2
		}
	}
	if len(v)%2 == 1 {
		acc |= uint64(math.Float32bits(v[len(v)-1])&0x7f800000 + 0x00800000)
	}
	return acc&sign2 == 0
}

// DecodeF32 appends to dst the float32 values little-endian encoded in b and returns the
// extended slice. Trailing bytes that do not make a whole 4-byte value are ignored.
func DecodeF32(dst []float32, b []byte) []float32 {
	n := len(b) / 4
	dst = slices.Grow(dst, n)
	for i := range n {
		dst = append(dst, math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])))
	}
	return dst
}

// Prefetch hints the CPU to start loading the first bytes of v into the cache, so that a
// distance computed a little later does not wait for memory. It never faults and has no other
// effect.
func Prefetch(v []byte) {
	if len(v) > 0 {
		prefetch(&v[0])
	}
}

// PrefetchAll hints the CPU to start loading all of v into the cache.
func PrefetchAll(v []byte) {
	if len(v) > 0 {
		prefetchRange(&v[0], len(v))
	}
}
