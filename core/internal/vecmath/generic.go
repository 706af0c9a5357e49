package vecmath

import (
	"encoding/binary"
	"math"
	"math/bits"
)

// The portable kernels. They are compiled on every platform: they are the fallback when the
// CPU lacks the features of the assembly kernels, and the tests compare the two.
//
// Each float kernel keeps four accumulators (element i goes to accumulator i mod 4 within
// each group of four; the tail elements go to the first one) and returns (s0+s1)+(s2+s3).
// Products and differences are rounded to float32 explicitly (float32(x*y)), which forbids the
// compiler from fusing them into a multiply-add, so the result is the same on every
// architecture.

// f32 decodes the little-endian float32 at the start of p.
func f32(p []byte) float32 { return math.Float32frombits(binary.LittleEndian.Uint32(p)) }

// trim4 cuts a and b to their common length rounded down to a multiple of 4.
func trim4(a, b []byte) ([]byte, []byte) {
	n := min(len(a), len(b)) &^ 3
	return a[:n], b[:n]
}

func dotGeneric(a, b []byte) float32 {
	a, b = trim4(a, b)
	var s0, s1, s2, s3 float32
	for len(a) >= 16 && len(b) >= 16 {
		s0 += float32(f32(a[0:4]) * f32(b[0:4]))
		s1 += float32(f32(a[4:8]) * f32(b[4:8]))
		s2 += float32(f32(a[8:12]) * f32(b[8:12]))
		s3 += float32(f32(a[12:16]) * f32(b[12:16]))
		a, b = a[16:], b[16:]
	}
	for len(a) >= 4 && len(b) >= 4 {
		s0 += float32(f32(a[0:4]) * f32(b[0:4]))
		a, b = a[4:], b[4:]
	}
	return (s0 + s1) + (s2 + s3)
}

func squaredL2Generic(a, b []byte) float32 {
	a, b = trim4(a, b)
	var s0, s1, s2, s3 float32
	for len(a) >= 16 && len(b) >= 16 {
		d0 := f32(a[0:4]) - f32(b[0:4])
		d1 := f32(a[4:8]) - f32(b[4:8])
		d2 := f32(a[8:12]) - f32(b[8:12])
		d3 := f32(a[12:16]) - f32(b[12:16])
		s0 += float32(d0 * d0)
		s1 += float32(d1 * d1)
		s2 += float32(d2 * d2)
		s3 += float32(d3 * d3)
		a, b = a[16:], b[16:]
	}
	for len(a) >= 4 && len(b) >= 4 {
		d := f32(a[0:4]) - f32(b[0:4])
		s0 += float32(d * d)
		a, b = a[4:], b[4:]
	}
	return (s0 + s1) + (s2 + s3)
}

// abs32 clears the sign bit of f.
func abs32(f float32) float32 { return math.Float32frombits(math.Float32bits(f) &^ (1 << 31)) }

func l1Generic(a, b []byte) float32 {
	a, b = trim4(a, b)
	var s0, s1, s2, s3 float32
	for len(a) >= 16 && len(b) >= 16 {
		s0 += abs32(f32(a[0:4]) - f32(b[0:4]))
		s1 += abs32(f32(a[4:8]) - f32(b[4:8]))
		s2 += abs32(f32(a[8:12]) - f32(b[8:12]))
		s3 += abs32(f32(a[12:16]) - f32(b[12:16]))
		a, b = a[16:], b[16:]
	}
	for len(a) >= 4 && len(b) >= 4 {
		s0 += abs32(f32(a[0:4]) - f32(b[0:4]))
		a, b = a[4:], b[4:]
	}
	return (s0 + s1) + (s2 + s3)
}

func dotU8Generic(w []float32, c []byte) float32 {
	n := min(len(w), len(c))
	w, c = w[:n], c[:n]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= n; i += 4 {
		s0 += w[i] * float32(c[i])
		s1 += w[i+1] * float32(c[i+1])
		s2 += w[i+2] * float32(c[i+2])
		s3 += w[i+3] * float32(c[i+3])
	}
	for ; i < n; i++ {
		s0 += w[i] * float32(c[i])
	}
	return (s0 + s1) + (s2 + s3)
}

func xorPopcountGeneric(a, b []byte) uint64 {
	n := min(len(a), len(b))
	a, b = a[:n], b[:n]
	var c0, c1 int
	for len(a) >= 16 && len(b) >= 16 {
		c0 += bits.OnesCount64(binary.LittleEndian.Uint64(a[0:8]) ^ binary.LittleEndian.Uint64(b[0:8]))
		c1 += bits.OnesCount64(binary.LittleEndian.Uint64(a[8:16]) ^ binary.LittleEndian.Uint64(b[8:16]))
		a, b = a[16:], b[16:]
	}
	for len(a) >= 8 && len(b) >= 8 {
		c0 += bits.OnesCount64(binary.LittleEndian.Uint64(a[0:8]) ^ binary.LittleEndian.Uint64(b[0:8]))
		a, b = a[8:], b[8:]
	}
	for i := range min(len(a), len(b)) {
		c1 += bits.OnesCount8(a[i] ^ b[i])
	}
	return uint64(c0 + c1)
}

// from returns v[off:], or nothing if v is shorter than off.
func from(v []byte, off int) []byte {
	if len(v) < off {
		return nil
	}
	return v[off:]
}

func dotManyGeneric(q []byte, vs [][]byte, off int, out []float32) {
	for i := range min(len(vs), len(out)) {
		out[i] = dotGeneric(q, from(vs[i], off))
	}
}

func squaredL2ManyGeneric(q []byte, vs [][]byte, off int, out []float32) {
	for i := range min(len(vs), len(out)) {
		out[i] = squaredL2Generic(q, from(vs[i], off))
	}
}
