package core

import "math"

// DefaultSeed seeds level assignment when BuildOptions.Seed is not set, like the reference's
// Python binding (which always seeds its generator with 42).
const DefaultSeed = 42

// levelDrawer assigns HNSW levels: P(level = L) = (1/M)^L (1 - 1/M), truncated where that
// probability falls below 1e-9 as in the reference. The level of an item depends only on the
// seed and its id, so it is the same whatever the batch, the order or the number of threads.
type levelDrawer struct {
	seed     uint64
	mL       float64
	maxLevel int
}

func newLevelDrawer(seed uint64, m int) levelDrawer {
	lambda := math.Log(float64(m))
	top := 0
	for L := 1; L < 64; L++ {
		if math.Exp(-lambda*float64(L))*(1-math.Exp(-lambda)) < 1e-9 {
			break
		}
		top = L
	}
	return levelDrawer{seed: seed, mL: 1 / lambda, maxLevel: top}
}

// splitmix64 is a well-mixed 64-bit hash (Steele, Lea, Flood 2014).
func splitmix64(x uint64) uint64 {
	x += 0x9E3779B97F4A7C15
	x = (x ^ x>>30) * 0xBF58476D1CE4E5B9
	x = (x ^ x>>27) * 0x94D049BB133111EB
	return x ^ x>>31
}

func (d levelDrawer) level(id uint32) int {
	x := splitmix64(d.seed ^ splitmix64(uint64(id)))
	u := (float64(x>>11) + 1) / (1 << 53) // (0, 1]
	return min(int(-math.Log(u)*d.mL), d.maxLevel)
}
