package core

import "math"

// cosineNorm is the norm stored in a cosine item's header: √(v·v), with the dot product summed
// in exactly the order of the reference's x86-64 kernels, so that item values are
// byte-identical to those Rust hannoy writes for the same vector (on x86-64 with AVX and FMA;
// the reference itself differs on other CPUs). It is only used when writing, never in searches.
func cosineNorm(v []float32) float32 {
	return float32(math.Sqrt(float64(referenceDot(v))))
}

// fma32 is a fused multiply-add rounded once to float32, as _mm256_fmadd_ps computes it.
func fma32(a, b, c float32) float32 {
	return float32(math.FMA(float64(a), float64(b), float64(c)))
}

// referenceDot is v·v summed like the reference: sequentially below 16 dimensions; with four
// 4-lane SSE accumulators (multiply, then add) below 32; with four 8-lane AVX FMA accumulators
// from 32 on. The remainder is added sequentially after the horizontal sums.
func referenceDot(v []float32) float32 {
	n := len(v)
	var sum float32
	switch {
	case n >= 32:
		m := n - n%32
		var acc [4][8]float32
		for i := 0; i < m; i += 32 {
			for a := 0; a < 4; a++ {
				for l := 0; l < 8; l++ {
					x := v[i+8*a+l]
					acc[a][l] = fma32(x, x, acc[a][l])
				}
			}
		}
		for a := 0; a < 4; a++ {
			sum += hsum256(acc[a])
		}
		for _, x := range v[m:] {
			sum += float32(x * x)
		}
	case n >= 16:
		m := n - n%16
		var acc [4][4]float32
		for i := 0; i < m; i += 16 {
			for a := 0; a < 4; a++ {
				for l := 0; l < 4; l++ {
					x := v[i+4*a+l]
					acc[a][l] = float32(x*x) + acc[a][l]
				}
			}
		}
		for a := 0; a < 4; a++ {
			sum += hsum128(acc[a])
		}
		for _, x := range v[m:] {
			sum += float32(x * x)
		}
	default:
		for _, x := range v {
			sum += float32(x * x)
		}
	}
	return sum
}

// hsum256 adds the 8 lanes like the reference: high half plus low half, then as hsum128.
func hsum256(x [8]float32) float32 {
	return hsum128([4]float32{x[4] + x[0], x[5] + x[1], x[6] + x[2], x[7] + x[3]})
}

// hsum128 adds 4 lanes like the reference: (x0+x2) + (x1+x3).
func hsum128(x [4]float32) float32 {
	return (x[0] + x[2]) + (x[1] + x[3])
}
