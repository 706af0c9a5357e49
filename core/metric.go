package core

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/hannoy-go/hannoy/core/internal/vecmath"
)

// float32Epsilon is Rust's f32::EPSILON, below which a cosine norm product counts as zero.
const float32Epsilon = 1.1920929e-07

// Metric is one of the seven distances of hannoy. Its numeric values follow the order of the
// Python Metric enum (and of the C ABI).
type Metric uint8

// The metrics. Distances returned by searches are exactly hannoy 0.1.3's:
//
//	Cosine       (1 - cos(p, q)) / 2, in [0, 1]; 0 when either vector is zero
//	Euclidean    squared L2: Σ (p_i - q_i)²
//	Manhattan    Σ |p_i - q_i|
//	BQCosine     binary quantized cosine, ≈ h / D
//	BQEuclidean  4·h (squared L2 between ±1 vectors)
//	BQManhattan  2·h
//	Hamming      h / D
//
// where h is the number of differing bits and D the dimension count rounded up to a multiple
// of 64 (binary vectors are stored in whole 64-bit words).
const (
	Cosine Metric = iota
	Euclidean
	Manhattan
	BQCosine
	BQEuclidean
	BQManhattan
	Hamming
)

// Metrics lists every metric in order.
var Metrics = []Metric{Cosine, Euclidean, Manhattan, BQCosine, BQEuclidean, BQManhattan, Hamming}

var metricNames = [...]string{
	"cosine", "euclidean", "manhattan",
	"binary quantized cosine", "binary quantized euclidean", "binary quantized manhattan",
	"hamming",
}

var metricShortNames = [...]string{
	"cosine", "euclidean", "manhattan", "bq_cosine", "bq_euclidean", "bq_manhattan", "hamming",
}

// Valid reports whether m is one of the seven metrics.
func (m Metric) Valid() bool { return int(m) < len(metricNames) }

// Name is the distance name stored in the index metadata, e.g. "binary quantized cosine".
func (m Metric) Name() string {
	if !m.Valid() {
		return fmt.Sprintf("metric(%d)", uint8(m))
	}
	return metricNames[m]
}

// String is the short name used by the Python package, e.g. "bq_cosine".
func (m Metric) String() string {
	if !m.Valid() {
		return fmt.Sprintf("metric(%d)", uint8(m))
	}
	return metricShortNames[m]
}

// ParseMetric accepts both the stored name ("binary quantized cosine") and the short name
// ("bq_cosine").
func ParseMetric(name string) (Metric, error) {
	for i := range metricNames {
		if name == metricNames[i] || name == metricShortNames[i] {
			return Metric(i), nil
		}
	}
	return 0, invalidf("unknown metric %q", name)
}

// binary reports whether vectors are stored as packed bits.
func (m Metric) binary() bool { return m >= BQCosine }

// headerSize is the size of the per-item header: an f32 (norm or bias), or a 64-bit usize
// for hamming.
func (m Metric) headerSize() int {
	if m == Hamming {
		return 8
	}
	return 4
}

// wordSize is the unit the stored vector is a multiple of.
func (m Metric) wordSize() int {
	if m.binary() {
		return 8
	}
	return 4
}

// vectorBytes is the stored size of a vector of dims dimensions.
func (m Metric) vectorBytes(dims int) int {
	if m.binary() {
		return (dims + 63) / 64 * 8
	}
	return dims * 4
}

// valueLen is the size of a whole item value: tag, header and vector.
func (m Metric) valueLen(dims int) int { return 1 + m.headerSize() + m.vectorBytes(dims) }

// checkVector validates a vector given by a user: its length and finite values.
func checkVector(vec []float32, dims int) error {
	if len(vec) != dims {
		return &DimensionError{Expected: dims, Received: len(vec)}
	}
	if vecmath.AllFinite(vec) {
		return nil
	}
	// Find the culprit for the message.
	for i, x := range vec {
		if math.Float32bits(x)&0x7f800000 == 0x7f800000 {
			return invalidf("vector value %d is %v: every value must be finite", i, x)
		}
	}
	return nil
}

// appendValue appends the item value (tag 0x00, header, encoded vector) of vec.
func (m Metric) appendValue(dst []byte, vec []float32) []byte {
	dst = append(dst, TagItem)
	hdr := len(dst)
	dst = append(dst, make([]byte, m.headerSize())...)
	body := len(dst)
	if m.binary() {
		dst = appendBits(dst, vec, m == Hamming)
	} else {
		dst = vecmath.F32Bytes(dst, vec)
	}
	switch m {
	case Cosine:
		binary.LittleEndian.PutUint32(dst[hdr:], math.Float32bits(cosineNorm(vec)))
	case BQCosine:
		norm := float32(math.Sqrt(float64(8 * (len(dst) - body))))
		binary.LittleEndian.PutUint32(dst[hdr:], math.Float32bits(norm))
	}
	return dst
}

// appendBits packs vec LSB-first into little-endian 64-bit words. For hamming a bit is set for a
// strictly positive value; for the binary quantized metrics for a value whose sign bit is clear.
func appendBits(dst []byte, vec []float32, hamming bool) []byte {
	for start := 0; start < len(vec); start += 64 {
		var word uint64
		for i := 0; i < 64 && start+i < len(vec); i++ {
			bits := math.Float32bits(vec[start+i])
			var set bool
			if hamming {
				set = bits != 0 && bits < 0x8000_0000
			} else {
				set = bits < 0x8000_0000
			}
			if set {
				word |= 1 << i
			}
		}
		dst = binary.LittleEndian.AppendUint64(dst, word)
	}
	return dst
}

// decodeVector appends the first dims values of the vector part of an item value to dst:
// floats for f32 metrics, 1/0 for hamming and +1/-1 for the binary quantized metrics.
func (m Metric) decodeVector(dst []float32, vec []byte, dims int) []float32 {
	if !m.binary() {
		n := min(dims, len(vec)/4)
		return vecmath.DecodeF32(dst, vec[:n*4])
	}
	zero := float32(-1)
	if m == Hamming {
		zero = 0
	}
	for i := 0; i < dims && i/8 < len(vec); i++ {
		if vec[i/8]>>(i%8)&1 == 1 {
			dst = append(dst, 1)
		} else {
			dst = append(dst, zero)
		}
	}
	return dst
}

// cosineDistance is the cosine distance of two vectors from their dot product and the product
// of their norms: (1 - cos) / 2, 0 when a norm is (nearly) zero.
func cosineDistance(dot, pnqn float32) float32 {
	if !(pnqn > float32Epsilon) {
		return 0
	}
	// Clamped by comparisons, which give the bits of max(-1, min(1, cos)) (NaN and -0 pass
	// through both) in fewer instructions.
	cos := dot / pnqn
	if cos > 1 {
		cos = 1
	} else if cos < -1 {
		cos = -1
	}
	return (1 - cos) / 2
}

// distances sets out[i] = m.distance(q, vs[i]) for every value of vs (the same bits), with one
// kernel call for the metrics whose kernel has a many-vector form (euclidean and cosine): no
// call per vector, and the next vector's cache lines are asked for while one is computed.
func (m Metric) distances(q []byte, vs [][]byte, out []float32) {
	out = out[:len(vs)]
	h := 1 + m.headerSize()
	switch m {
	case Euclidean:
		vecmath.SquaredL2Many(q[h:], vs, h, out)
	case Cosine:
		vecmath.DotMany(q[h:], vs, h, out)
		qn := math.Float32frombits(binary.LittleEndian.Uint32(q[1:]))
		for i, p := range vs {
			out[i] = cosineDistance(out[i], qn*math.Float32frombits(binary.LittleEndian.Uint32(p[1:])))
		}
	default:
		for i, p := range vs {
			out[i] = m.distance(q, p)
		}
	}
}

// distance returns the distance between two item values of this metric, both of length
// valueLen(dims) (tag, header and vector).
func (m Metric) distance(p, q []byte) float32 {
	h := 1 + m.headerSize()
	switch m {
	case Euclidean:
		return vecmath.SquaredL2(p[h:], q[h:])
	case Cosine:
		pn := math.Float32frombits(binary.LittleEndian.Uint32(p[1:]))
		qn := math.Float32frombits(binary.LittleEndian.Uint32(q[1:]))
		return cosineDistance(vecmath.Dot(p[h:], q[h:]), pn*qn)
	case Manhattan:
		return vecmath.L1(p[h:], q[h:])
	case Hamming:
		d := float32(8 * (len(p) - h))
		return float32(vecmath.XorPopcount(p[h:], q[h:])) / d
	case BQEuclidean:
		return 4 * float32(vecmath.XorPopcount(p[h:], q[h:]))
	case BQManhattan:
		return 2 * float32(vecmath.XorPopcount(p[h:], q[h:]))
	case BQCosine:
		pn := math.Float32frombits(binary.LittleEndian.Uint32(p[1:]))
		qn := math.Float32frombits(binary.LittleEndian.Uint32(q[1:]))
		pnqn := pn * qn
		if pnqn == 0 {
			return 0
		}
		bits := int64(8 * (len(p) - h))
		dot := float32(bits - 2*int64(vecmath.XorPopcount(p[h:], q[h:])))
		return (1 - dot/pnqn) / 2
	}
	return float32(math.NaN())
}
