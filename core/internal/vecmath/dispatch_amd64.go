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

// dotU8AVX2 is DotU8 with AVX2 and FMA.
//
//go:noescape
func dotU8AVX2(w []float32, c []byte) float32

// xorPopcountPOPCNT is XorPopcount with POPCNT.
//
//go:noescape
func xorPopcountPOPCNT(a, b []byte) uint64

// hasAVX2FMA and hasPOPCNT report the CPU features (as filtered by GODEBUG) at start-up.
var (
	hasAVX2FMA = cpu.X86.HasAVX2 && cpu.X86.HasFMA
	hasPOPCNT  = cpu.X86.HasPOPCNT
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
		return []kernelSet{{
			name:        "avx2+fma",
			dot:         dotAVX2,
			squaredL2:   squaredL2AVX2,
			l1:          l1AVX2,
			dotU8:       dotU8AVX2,
			xorPopcount: xor,
			xorName:     xorName,
		}}
	case hasPOPCNT:
		// Portable float kernels; only XorPopcount is accelerated.
		k := genericKernels
		k.xorPopcount, k.xorName = xor, xorName
		return []kernelSet{k}
	}
	return nil
}
