//go:build !purego

package vecmath

import "golang.org/x/sys/cpu"

// The assembly kernels, in kernels_amd64.s. Each one computes the common length of a and b
// itself, so it is safe to call with any slices.

// dotAVX2 is Dot with AVX2 and FMA.
//
//go:noescape
func dotAVX2(a, b []byte) float32

// squaredL2AVX2 is SquaredL2 with AVX2 and FMA.
//
//go:noescape
func squaredL2AVX2(a, b []byte) float32

// l1AVX2 is L1 with AVX2.
//
//go:noescape
func l1AVX2(a, b []byte) float32

// dotManyAVX2 is DotMany with AVX2 and FMA (dotAVX2's arithmetic).
//
//go:noescape
func dotManyAVX2(q []byte, vs [][]byte, off int, out []float32)

// squaredL2ManyAVX2 is SquaredL2Many with AVX2 and FMA (squaredL2AVX2's arithmetic).
//
//go:noescape
func squaredL2ManyAVX2(q []byte, vs [][]byte, off int, out []float32)

// dotU8AVX2 is DotU8 with AVX2 and FMA.
//
//go:noescape
func dotU8AVX2(w []float32, c []byte) float32

// xorPopcountPOPCNT is XorPopcount with POPCNT.
//
//go:noescape
func xorPopcountPOPCNT(a, b []byte) uint64

// The AVX-512 kernels, in kernels_avx512_amd64.s.

// dotAVX512 is Dot with AVX2 and FMA, and an AVX-512VL masked tail.
//
//go:noescape
func dotAVX512(a, b []byte) float32

// squaredL2AVX512 is SquaredL2 with AVX2 and FMA, and an AVX-512VL masked tail.
//
//go:noescape
func squaredL2AVX512(a, b []byte) float32

// dotManyAVX512 is DotMany with dotAVX512's arithmetic.
//
//go:noescape
func dotManyAVX512(q []byte, vs [][]byte, off int, out []float32)

// squaredL2ManyAVX512 is SquaredL2Many with squaredL2AVX512's arithmetic.
//
//go:noescape
func squaredL2ManyAVX512(q []byte, vs [][]byte, off int, out []float32)

// l1AVX512 is L1 with AVX2, and an AVX-512VL masked tail.
//
//go:noescape
func l1AVX512(a, b []byte) float32

// dotU8AVX512 is DotU8 with AVX-512F (16 lanes).
//
//go:noescape
func dotU8AVX512(w []float32, c []byte) float32

// xorPopcountAVX512 is XorPopcount with AVX-512BW and AVX512_VPOPCNTDQ.
//
//go:noescape
func xorPopcountAVX512(a, b []byte) uint64

// The CPU features (as filtered by GODEBUG) at start-up.
//
// golang.org/x/sys/cpu sets HasAVX512F only when the OS saves the opmask and ZMM state (XCR0
// bits 5-7, read with XGETBV), and honours GODEBUG=cpu.avx512f=off (as does the runtime). It
// does not clear the other AVX-512 flags (VL, BW, VPOPCNTDQ, ...) when AVX512F is turned off,
// so every AVX-512 level below checks AVX512F itself. The levels nest like x86-64-v3/v4: the
// AVX-512 kernels also require AVX2 and FMA (the float kernels' bodies and every reduction use
// them), so GODEBUG=cpu.avx2=off turns them off as well; and the VPOPCNTQ XorPopcount also
// requires POPCNT, so GODEBUG=cpu.popcnt=off still gives the portable XorPopcount.
var (
	hasAVX2FMA = cpu.X86.HasAVX2 && cpu.X86.HasFMA
	hasPOPCNT  = cpu.X86.HasPOPCNT
	// hasAVX512: the float kernels' masked tails use opmasks on 256-bit registers (AVX512VL).
	hasAVX512 = hasAVX2FMA && cpu.X86.HasAVX512 && cpu.X86.HasAVX512F && cpu.X86.HasAVX512VL
	// hasAVX512Popcnt: VPOPCNTQ (AVX512_VPOPCNTDQ) and byte-masked loads (AVX512BW).
	hasAVX512Popcnt = hasAVX512 && hasPOPCNT && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VPOPCNTDQ
)

// selectKernels returns the fastest kernel set this CPU can run.
func selectKernels() kernelSet {
	if s := simdKernels(); len(s) > 0 {
		return s[0]
	}
	return genericKernels
}

// simdKernels lists the accelerated kernel sets this CPU can run, best first.
func simdKernels() []kernelSet {
	xor, xorName := xorPopcountGeneric, "generic"
	if hasPOPCNT {
		xor, xorName = xorPopcountPOPCNT, "popcnt"
	}
	switch {
	case hasAVX2FMA:
		avx2 := kernelSet{
			name:        "avx2+fma",
			dot:         dotAVX2,
			squaredL2:   squaredL2AVX2,
			dotMany:     dotManyAVX2,
			l2Many:      squaredL2ManyAVX2,
			l1:          l1AVX2,
			dotU8:       dotU8AVX2,
			xorPopcount: xor,
			xorName:     xorName,
		}
		if !hasAVX512 {
			return []kernelSet{avx2}
		}
		avx512 := kernelSet{
			name:        "avx512",
			dot:         dotAVX512,
			squaredL2:   squaredL2AVX512,
			dotMany:     dotManyAVX512,
			l2Many:      squaredL2ManyAVX512,
			l1:          l1AVX512,
			dotU8:       dotU8AVX512,
			xorPopcount: xor,
			xorName:     xorName,
		}
		if hasAVX512Popcnt {
			avx512.xorPopcount, avx512.xorName = xorPopcountAVX512, "vpopcntq"
		}
		return []kernelSet{avx512, avx2}
	case hasPOPCNT:
		// Portable float kernels; only XorPopcount is accelerated.
		k := genericKernels
		k.xorPopcount, k.xorName = xor, xorName
		return []kernelSet{k}
	}
	return nil
}
