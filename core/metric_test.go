package core

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"
)

// scalarDistance is each metric's formula written plainly, in float64.
func scalarDistance(m Metric, p, q []float32) float64 {
	padded := float64((len(p) + 63) / 64 * 64)
	var dot, pp, qq, l2, l1 float64
	h := 0
	for i := range p {
		a, b := float64(p[i]), float64(q[i])
		dot += a * b
		pp += a * a
		qq += b * b
		l2 += (a - b) * (a - b)
		l1 += math.Abs(a - b)
		var bp, bq bool
		if m == Hamming {
			bp, bq = p[i] > 0, q[i] > 0
		} else {
			bp, bq = !math.Signbit(a), !math.Signbit(b)
		}
		if bp != bq {
			h++
		}
	}
	switch m {
	case Cosine:
		if math.Sqrt(pp)*math.Sqrt(qq) <= float64(float32Epsilon) {
			return 0
		}
		return (1 - math.Max(-1, math.Min(1, dot/math.Sqrt(pp*qq)))) / 2
	case Euclidean:
		return l2
	case Manhattan:
		return l1
	case Hamming, BQCosine:
		return float64(h) / padded
	case BQEuclidean:
		return 4 * float64(h)
	case BQManhattan:
		return 2 * float64(h)
	}
	panic("unknown metric")
}

func TestMetricsAgainstScalarFormulas(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, m := range Metrics {
		for _, dims := range []int{1, 3, 16, 63, 64, 65, 100, 128, 784, 1536} {
			for trial := 0; trial < 20; trial++ {
				p := make([]float32, dims)
				q := make([]float32, dims)
				for i := range p {
					p[i] = rng.Float32()*2 - 1
					q[i] = rng.Float32()*2 - 1
				}
				if trial == 0 {
					copy(q, p)
				}
				got := float64(m.distance(m.appendValue(nil, p), m.appendValue(nil, q)))
				want := scalarDistance(m, p, q)
				if math.Abs(got-want) > 1e-4*math.Max(1, math.Abs(want)) {
					t.Fatalf("%s dims %d: got %v, want %v", m, dims, got, want)
				}
				if trial == 0 && got > 1e-6 {
					t.Fatalf("%s dims %d: distance to itself %v", m, dims, got)
				}
			}
		}
	}
}

func TestMetricNames(t *testing.T) {
	for _, m := range Metrics {
		for _, name := range []string{m.Name(), m.String()} {
			got, err := ParseMetric(name)
			if err != nil || got != m {
				t.Fatalf("ParseMetric(%q) = %v, %v", name, got, err)
			}
		}
	}
	if BQCosine.Name() != "binary quantized cosine" || BQCosine.String() != "bq_cosine" {
		t.Fatal(BQCosine.Name(), BQCosine.String())
	}
	if _, err := ParseMetric("dot"); err == nil {
		t.Fatal("unknown metric accepted")
	}
}

func TestItemValueGolden(t *testing.T) {
	tests := []struct {
		m    Metric
		vec  []float32
		want []byte
	}{
		// Reference §1.3.
		{Euclidean, []float32{0, 1, 2}, []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x3f, 0, 0, 0, 0x40}},
		{Cosine, []float32{1, 2}, []byte{0, 0xbd, 0x1b, 0x0f, 0x40, 0, 0, 0x80, 0x3f, 0, 0, 0, 0x40}},
		// Reference §2.1: binary quantized packing, LSB first, padded to 64 bits; √64 = 8 header.
		{BQCosine, []float32{0.1, 0.2, -0.3, 0.4, -0.5, 0.6, -0.7, 0.8, -0.9},
			[]byte{0, 0, 0, 0, 0x41, 0b10101011, 0, 0, 0, 0, 0, 0, 0}},
		{BQEuclidean, []float32{-1, 2, -3, 4, 5}, []byte{0, 0, 0, 0, 0, 0b00011010, 0, 0, 0, 0, 0, 0, 0}},
		// Hamming: 8-byte header, +0.0 and -0.0 are 0 bits.
		{Hamming, []float32{-1, 2, -3, 4, 5, 0, float32(math.Copysign(0, -1))},
			[]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0b00011010, 0, 0, 0, 0, 0, 0, 0}},
	}
	for _, tt := range tests {
		got := tt.m.appendValue(nil, tt.vec)
		if !bytes.Equal(got, tt.want) {
			t.Errorf("%s %v:\n got %x\nwant %x", tt.m, tt.vec, got, tt.want)
		}
		if len(got) != tt.m.valueLen(len(tt.vec)) {
			t.Errorf("%s: valueLen %d, encoded %d", tt.m, tt.m.valueLen(len(tt.vec)), len(got))
		}
	}
	// BQ: +0.0 is a 1 bit, -0.0 a 0 bit.
	v := BQManhattan.appendValue(nil, []float32{0, float32(math.Copysign(0, -1))})
	if v[5] != 1 {
		t.Fatalf("bq zero signs: %08b", v[5])
	}
}

func TestDecodeVector(t *testing.T) {
	vec := []float32{-1, 2, -3, 4, 5, 0}
	for _, tt := range []struct {
		m    Metric
		want []float32
	}{
		{Euclidean, vec},
		{Hamming, []float32{0, 1, 0, 1, 1, 0}},
		{BQCosine, []float32{-1, 1, -1, 1, 1, 1}},
	} {
		val := tt.m.appendValue(nil, vec)
		got := tt.m.decodeVector(nil, val[1+tt.m.headerSize():], len(vec))
		if len(got) != len(tt.want) {
			t.Fatalf("%s: %v", tt.m, got)
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Fatalf("%s: got %v, want %v", tt.m, got, tt.want)
			}
		}
	}
}

func BenchmarkDistance(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, m := range []Metric{Cosine, Euclidean, Hamming} {
		for _, dims := range []int{128, 768} {
			p, q := make([]float32, dims), make([]float32, dims)
			for i := range p {
				p[i], q[i] = rng.Float32(), rng.Float32()
			}
			pv, qv := m.appendValue(nil, p), m.appendValue(nil, q)
			b.Run(m.String()+"/"+itoa(dims), func(b *testing.B) {
				for b.Loop() {
					m.distance(pv, qv)
				}
			})
		}
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var buf [20]byte
	i := len(buf)
	for ; n > 0; n /= 10 {
		i--
		buf[i] = byte('0' + n%10)
	}
	return string(buf[i:])
}
