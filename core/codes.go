package core

import (
	"encoding/binary"
	"fmt"
	"math"
	"path/filepath"
	"unsafe"

	"github.com/RoaringBitmap/roaring/v2"

	"github.com/hannoy-go/hannoy/core/internal/vecmath"
)

// codes is the compressed copy of an index that a reader walks the graph with when the file
// does not fit in memory (the DiskANN design): every item's vector as 8-bit scalar-quantized
// codes, one byte a dimension (per-dimension ranges), in memory, and where its exact value lies
// in the memory map. A search computes approximate distances from the codes alone and reads
// exact vectors only to re-rank its best candidates, advising their pages together.
//
// Codes are made by a reader from its own snapshot (a scan of the index's item values in key
// order) and live as long as the reader: they can never be stale, and no file of them exists
// that another program could change or damage.
type codes struct {
	metric Metric
	dims   int
	lo     []float32 // per dimension: the value of code 0
	step   []float32 // per dimension: the value of one code step
	data   []uint8   // slot*dims ...: the codes
	aux    []float32 // per slot: |x̂|² (euclidean) or |x̂| (cosine, of the normalized vector)
	refs   []*byte   // per slot: the item value in LMDB's memory map
	dense  []int32   // id -> slot+1 (0: no item), when ids are dense enough
	sparse map[uint32]int32

	// Layer-0 links of the first linksLoaded slots, preloaded while they fit the budget.
	packedLists
}

// packedLists holds the neighbour lists of slots 0 to linksLoaded-1, packed by packList, in
// segments of linkSegSlots slots: the list of slot s is linkSegs[s/linkSegSlots][start:linkEnd[s]],
// where start is linkEnd[s-1] within the same segment and 0 at a segment's first slot. A build
// replaces lists a segment at a time (replaceLinks), never holding a second copy of more than
// one segment.
type packedLists struct {
	linkEnd     []uint32
	linkSegs    [][]byte
	linkBytes   int64 // the segments' bytes (their capacity)
	linksLoaded int32
}

// newPackedLists holds n empty lists.
func newPackedLists(n int) *packedLists {
	return &packedLists{linkEnd: make([]uint32, n), linkSegs: make([][]byte, (n+linkSegSlots-1)/linkSegSlots),
		linksLoaded: int32(n)}
}

// quantizable reports whether a metric's readers can walk with codes: the float metrics (the
// binary ones already store one bit a dimension).
func (m Metric) quantizable() bool { return !m.binary() }

// codesBytes is the memory codes take for n items of dims dimensions and ids up to maxID.
func codesBytes(n uint64, dims int, maxID uint32) int64 {
	per := int64(dims) + 4 + 8
	b := int64(n) * per
	if denseIDs(maxID, n) {
		b += 4 * (int64(maxID) + 1)
	} else {
		b += 40 * int64(n) // map entries
	}
	return b
}

// denseIDs reports whether ids up to maxID among n items are dense enough for a flat array
// indexed by id (tables and codes alike).
func denseIDs(maxID uint32, n uint64) bool { return uint64(maxID) < 4*n+1<<16 }

// slot returns the slot of item id, or -1.
func (c *codes) slot(id uint32) int32 {
	if c.dense != nil {
		if int(id) < len(c.dense) {
			return c.dense[id] - 1
		}
		return -1
	}
	if s, ok := c.sparse[id]; ok {
		return s
	}
	return -1
}

// codeSamples is how many item vectors, spread over the index, set the quantization ranges.
const codeSamples = 4096

// codeSource is the index codes are made from: items of db's index (of metric and dims) as a
// transaction sees them.
type codeSource struct {
	db     *Database
	index  uint16
	metric Metric
	dims   int
	items  *roaring.Bitmap
	used   int64 // the used size of the data file
	// refs keeps where each value lies in the memory map (a reader's codes; a build's need not).
	refs bool
}

func (src *codeSource) valueLen() int { return src.metric.valueLen(src.dims) }

// buildCodes scans every item value of the source's index in txn and quantizes it, asking the
// kernel to read ahead by at most a sixteenth of budget. If second is not nil (another
// transaction on the same snapshot), the second half of the items is scanned with it at the
// same time, on another goroutine.
func buildCodes(txn, second Txn, src codeSource, budget int64) (*codes, error) {
	items := src.items
	n := items.GetCardinality()
	maxID := uint32(0)
	if n > 0 {
		maxID = items.Maximum()
	}
	c := &codes{metric: src.metric, dims: src.dims, lo: make([]float32, src.dims), step: make([]float32, src.dims)}
	if err := c.setRanges(txn, &src, n); err != nil {
		return nil, err
	}
	// Slots are the items' ranks: assigned now, so that parts of the index can be scanned at
	// once. A slot whose item turns out to have no value keeps a NaN aux and is dropped.
	c.data = make([]uint8, n*uint64(src.dims))
	c.aux = make([]float32, n)
	nan := float32(math.NaN())
	for i := range c.aux {
		c.aux[i] = nan
	}
	if src.refs {
		c.refs = make([]*byte, n)
	}
	if denseIDs(maxID, n) {
		c.dense = make([]int32, uint64(maxID)+1)
	} else {
		c.sparse = make(map[uint32]int32, n)
	}
	slot := int32(0)
	for it := items.Iterator(); it.HasNext(); slot++ {
		if id := it.Next(); c.dense != nil {
			c.dense[id] = slot + 1
		} else {
			c.sparse[id] = slot
		}
	}
	if second == nil || n < 2*codeSamples {
		if err := c.scanItems(txn, &src, 0, math.MaxUint32+1, budget); err != nil {
			return nil, err
		}
	} else {
		mid, err := items.Select(uint32(n / 2))
		if err != nil {
			return nil, err
		}
		errs := make(chan error, 1)
		go func() { errs <- c.scanItems(second, &src, uint64(mid), math.MaxUint32+1, budget/2) }()
		err = c.scanItems(txn, &src, 0, uint64(mid), budget/2)
		if err2 := <-errs; err == nil {
			err = err2
		}
		if err != nil {
			return nil, err
		}
	}
	// Items the metadata names without a value (damage): not in the codes, as a reader
	// without codes finds no vector for them.
	for it := items.Iterator(); it.HasNext(); {
		id := it.Next()
		if s := c.slot(id); s >= 0 && c.aux[s] != c.aux[s] {
			if c.dense != nil {
				c.dense[id] = 0
			} else {
				delete(c.sparse, id)
			}
		}
	}
	return c, nil
}

// scanItems encodes the values of the items with ids in [from, to) into their slots.
func (c *codes) scanItems(txn Txn, src *codeSource, from, to uint64, budget int64) error {
	if from > math.MaxUint32 {
		return nil
	}
	ra := newReadAhead(filepath.Join(src.db.env.path, "data.mdb"), src.used, budget)
	vec := make([]float32, 0, src.dims)
	valueLen := src.valueLen()
	var start [KeySize]byte
	return scanFrom(txn, src.db, ModePrefix(src.index, ModeItem), ItemKey(src.index, uint32(from)).Append(start[:0]),
		func(k Key, v []byte) (bool, error) {
			if uint64(k.Item) >= to {
				return false, nil
			}
			s := c.slot(k.Item)
			if s < 0 {
				return true, nil // not an item of the index
			}
			if len(v) != valueLen || v[0] != TagItem {
				return false, fmt.Errorf("item %d of index %d: %w", k.Item, src.index, corruptf("value of %d bytes with tag %d", len(v), v[0]))
			}
			ra.at(v)
			vec = src.metric.decodeVector(vec[:0], v[1+src.metric.headerSize():], src.dims)
			c.aux[s] = c.encode(c.data[int(s)*c.dims:int(s+1)*c.dims], vec, v)
			if src.refs {
				c.refs[s] = &v[0]
			}
			return true, nil
		})
}

// cosineScale is 1/|v| for a cosine item value (0 for a zero vector), from its stored norm.
func cosineScale(value []byte) float32 {
	norm := math.Float32frombits(binary.LittleEndian.Uint32(value[1:]))
	if !(norm > float32Epsilon) {
		return 0
	}
	return 1 / norm
}

// setRanges sets each dimension's range from up to codeSamples items spread over the index,
// widened by a tenth on each side; values outside it saturate.
func (c *codes) setRanges(txn Txn, src *codeSource, n uint64) error {
	hi := make([]float32, len(c.lo))
	for d := range c.lo {
		c.lo[d], hi[d] = float32(math.Inf(1)), float32(math.Inf(-1))
	}
	samples := min(n, codeSamples)
	vec := make([]float32, 0, src.dims)
	for i := uint64(0); i < samples; i++ {
		id, err := src.items.Select(uint32(i * n / samples))
		if err != nil {
			return fmt.Errorf("sample item %d: %w", i, err)
		}
		v, ok, err := get(txn, src.db, ItemKey(src.index, id))
		if err != nil {
			return err
		}
		if !ok || len(v) != src.valueLen() {
			continue // the scan reports damage
		}
		vec = src.metric.decodeVector(vec[:0], v[1+src.metric.headerSize():], src.dims)
		scale := float32(1)
		if c.metric == Cosine {
			scale = cosineScale(v)
		}
		for d, x := range vec {
			x *= scale
			c.lo[d] = min(c.lo[d], x)
			hi[d] = max(hi[d], x)
		}
	}
	for d := range c.lo {
		lo, top := c.lo[d], hi[d]
		if lo > top { // no sample
			lo, top = -1, 1
		}
		margin := (top - lo) / 10
		lo, top = lo-margin, top+margin
		c.lo[d] = lo
		c.step[d] = max((top-lo)/255, 1e-30)
	}
	return nil
}

// encode writes the codes of vec (the decoded vector of item value v) into dst (dims bytes)
// and returns its aux value.
func (c *codes) encode(dst []uint8, vec []float32, v []byte) float32 {
	scale := float32(1)
	if c.metric == Cosine {
		scale = cosineScale(v)
	}
	var sq float32
	lo, step := c.lo[:len(vec)], c.step[:len(vec)]
	dst = dst[:len(vec)]
	for d, x := range vec {
		f := (x*scale-lo[d])/step[d] + 0.5
		q := uint8(0)
		if f >= 255 {
			q = 255
		} else if f > 0 {
			q = uint8(f) // rounds to nearest: f was shifted by 0.5
		}
		dst[d] = q
		y := lo[d] + float32(q)*step[d]
		sq += y * y
	}
	switch c.metric {
	case Cosine:
		if scale == 0 {
			return 0
		}
		return float32(math.Sqrt(float64(sq)))
	case Euclidean:
		return sq
	}
	return 0
}

// codeQuery is a query prepared for distances to codes.
type codeQuery struct {
	w  []float32 // per dimension
	c0 float32
	// zero is set for a cosine query of norm 0: every distance is 0, as the exact metric says.
	zero bool
}

// prepare readies q (the query's float vector) for dist.
func (c *codes) prepare(cq *codeQuery, q []float32) {
	cq.w = cq.w[:0]
	cq.c0, cq.zero = 0, false
	switch c.metric {
	case Euclidean: // |q - x̂|² = |q|² - 2 Σ q_d lo_d - 2 Σ q_d step_d code_d + |x̂|²
		var qq, ql float32
		for d, x := range q {
			qq += x * x
			ql += x * c.lo[d]
			cq.w = append(cq.w, -2*x*c.step[d])
		}
		cq.c0 = qq - 2*ql
	case Cosine: // q̂·x̂ = Σ q̂_d lo_d + Σ q̂_d step_d code_d
		var qq float32
		for _, x := range q {
			qq += x * x
		}
		norm := float32(math.Sqrt(float64(qq)))
		if !(norm > float32Epsilon) {
			cq.zero = true
			return
		}
		for d, x := range q {
			x /= norm
			cq.c0 += x * c.lo[d]
			cq.w = append(cq.w, x*c.step[d])
		}
	case Manhattan: // Σ step_d |(q_d - lo_d)/step_d - code_d|
		for d, x := range q {
			cq.w = append(cq.w, (x-c.lo[d])/c.step[d])
		}
	}
}

// dist is the approximate distance from a prepared query to the item in slot, in the metric's
// own scale.
func (c *codes) dist(cq *codeQuery, slot int32) float32 {
	code := c.data[int(slot)*c.dims : int(slot+1)*c.dims]
	switch c.metric {
	case Euclidean:
		return max(0, cq.c0+vecmath.DotU8(cq.w, code)+c.aux[slot])
	case Cosine:
		norm := c.aux[slot]
		if cq.zero || norm == 0 {
			return 0
		}
		cos := (cq.c0 + vecmath.DotU8(cq.w, code)) / norm
		return (1 - max(-1, min(1, cos))) / 2
	case Manhattan:
		var s float32
		for d, x := range cq.w {
			diff := x - float32(code[d])
			if diff < 0 {
				diff = -diff
			}
			s += diff * c.step[d]
		}
		return s
	}
	return float32(math.NaN())
}

// prefetch asks the CPU for the code and the norm of slot, ahead of dist.
func (c *codes) prefetch(slot int32) {
	vecmath.PrefetchAll(c.data[int(slot)*c.dims : int(slot+1)*c.dims])
	vecmath.Prefetch(unsafe.Slice((*byte)(unsafe.Pointer(&c.aux[slot])), 4))
}

// bytes is the memory the codes and preloaded links hold.
func (c *codes) bytes() int64 {
	return int64(len(c.data)) + 4*int64(len(c.aux)) + 8*int64(len(c.refs)) + 4*int64(len(c.dense)) +
		40*int64(len(c.sparse)) + c.linksBytes()
}

// linksBytes is the memory the lists hold.
func (c *packedLists) linksBytes() int64 {
	return 4*int64(cap(c.linkEnd)) + 24*int64(cap(c.linkSegs)) + c.linkBytes
}

// linkSegShift sets the slots of a segment of preloaded links: 4,096, about 250 KB of lists of
// 32 neighbours.
const (
	linkSegShift = 12
	linkSegSlots = 1 << linkSegShift
)

// packList appends ids (ascending, as a links bitmap decodes) to dst as unsigned varints of
// their differences: the first id, then each id minus the one before. Neighbours of an item
// among n items are on average n/32 apart, so most differences take two bytes where an id
// takes four: preloading packed lists holds about twice as many items' links in a budget.
func packList(dst []byte, ids []uint32) []byte {
	prev := uint32(0)
	for _, id := range ids {
		dst = binary.AppendUvarint(dst, uint64(id-prev))
		prev = id
	}
	return dst
}

// unpackList appends the ids packList packed into b to dst. It decodes the varints itself
// rather than with binary.Uvarint: on a 24-id list (the walk decodes one a hop) 82-93 ns
// against 140-156 ns, 3 alternated runs of a micro-benchmark of the two loops.
func unpackList(dst []uint32, b []byte) []uint32 {
	id := uint32(0)
	for i := 0; i < len(b); {
		x := uint32(b[i])
		i++
		if x >= 0x80 { // more bytes: packList wrote at most five, from 32-bit differences
			x &= 0x7f
			for shift := 7; ; shift += 7 {
				c := uint32(b[i])
				i++
				x |= (c & 0x7f) << shift
				if c < 0x80 {
					break
				}
			}
		}
		id += x
		dst = append(dst, id)
	}
	return dst
}

// loadLinks reads the layer-0 links of the index's items, in key order (the order of slots),
// into memory while they fit in budget bytes; the rest are read from the file when needed.
func (c *codes) loadLinks(txn Txn, src codeSource, budget int64) error {
	n := len(c.aux)
	tables := 4*int64(n) + 24*int64(n/linkSegSlots+1)
	if n == 0 || budget < tables+2*int64(n) {
		return nil
	}
	room := budget - tables
	c.linkEnd = make([]uint32, 0, n)
	c.linkSegs = make([][]byte, 0, n/linkSegSlots+1)
	ra := newReadAhead(filepath.Join(src.db.env.path, "data.mdb"), src.used, budget)
	var next int32   // the next slot to fill
	var one []uint32 // one item's links
	var seg []byte   // the segment being filled, copied to its own slice once full
	// fill records slot next's list (packed, possibly empty) and closes a full segment.
	fill := func(packed []byte) {
		seg = append(seg, packed...)
		c.linkEnd = append(c.linkEnd, uint32(len(seg)))
		next++
		if next%linkSegSlots == 0 {
			c.addSeg(seg)
			seg = seg[:0]
		}
	}
	var packed []byte
	err := scanPrefix(txn, src.db, ModePrefix(src.index, ModeLinks), func(k Key, v []byte) (bool, error) {
		if k.Layer != 0 {
			return true, nil
		}
		s := c.slot(k.Item)
		if s < next { // not an item of the index (or damage): the search never asks
			return true, nil
		}
		ra.at(v)
		var err error
		if one, err = DecodeLinksValue(v, one[:0]); err != nil {
			return false, fmt.Errorf("links of item %d on layer 0 of index %d: %w", k.Item, src.index, corruptf("%v", err))
		}
		packed = packList(packed[:0], one)
		if c.linkBytes+int64(len(seg)+len(packed)) > room || len(seg)+len(packed) > math.MaxUint32 {
			return false, nil // full: the rest is read from the file
		}
		for next < s { // items without links
			fill(nil)
		}
		fill(packed)
		return true, nil
	})
	if err != nil {
		c.linkEnd, c.linkSegs, c.linkBytes, c.linksLoaded = nil, nil, 0, 0
		return err
	}
	if next == 0 {
		c.linkEnd, c.linkSegs = nil, nil
		return nil
	}
	if next%linkSegSlots != 0 {
		c.addSeg(seg)
	}
	c.linksLoaded = next
	return nil
}

// addSeg appends a copy of seg, of its length, as the next segment.
func (c *packedLists) addSeg(seg []byte) {
	c.linkSegs = append(c.linkSegs, append(make([]byte, 0, len(seg)), seg...))
	c.linkBytes += int64(len(seg))
}

// trimLinks drops preloaded links from the last segment down while they take more than budget
// bytes (the lists dropped are read from the file again).
func (c *packedLists) trimLinks(budget int64) {
	for len(c.linkSegs) > 0 && c.linksBytes() > budget {
		k := len(c.linkSegs) - 1
		c.linkBytes -= int64(cap(c.linkSegs[k]))
		c.linkSegs[k] = nil
		c.linkSegs = c.linkSegs[:k]
		c.linksLoaded = int32(k) << linkSegShift
	}
	if len(c.linkSegs) == 0 {
		c.linkEnd, c.linkSegs, c.linksLoaded = nil, nil, 0
	}
}

// linkList returns the packed list of a preloaded slot.
func (c *packedLists) linkList(s int32) []byte {
	start := uint32(0)
	if s%linkSegSlots != 0 {
		start = c.linkEnd[s-1]
	}
	return c.linkSegs[s>>linkSegShift][start:c.linkEnd[s]]
}

// replaceLinks replaces the preloaded lists of slots (ascending, without repeats, each below
// linksLoaded) with list(i) for slots[i] (ids ascending, without repeats), rebuilding each
// segment they fall in: it holds a second copy of one segment at a time. Not safe for use
// concurrently with readers of the links.
func (c *packedLists) replaceLinks(slots []int32, list func(i int) []uint32) {
	var seg []byte
	for i := 0; i < len(slots) && slots[i] < c.linksLoaded; {
		k := slots[i] >> linkSegShift
		first := k << linkSegShift
		last := min(first+linkSegSlots, c.linksLoaded)
		old := c.linkSegs[k]
		seg = seg[:0]
		oldStart := uint32(0)
		for s := first; s < last; s++ {
			oldEnd := c.linkEnd[s]
			if i < len(slots) && slots[i] == s {
				seg = packList(seg, list(i))
				i++
			} else {
				seg = append(seg, old[oldStart:oldEnd]...)
			}
			oldStart = oldEnd
			c.linkEnd[s] = uint32(len(seg))
		}
		// Into the old segment's storage when it fits: a flush between batches touches most
		// segments, and a new copy of each was most of what a million-item build allocated
		// (975 MB in one chunk) and what kept its collector running.
		if len(seg) > cap(old) {
			old = make([]byte, 0, len(seg)+len(seg)/16)
		}
		c.linkBytes += int64(cap(old) - cap(c.linkSegs[k]))
		c.linkSegs[k] = append(old[:0], seg...)
	}
}

// reconstruct appends to dst the item value (tag, header, vector) of the vector the codes of
// slot stand for (for cosine: the normalized vector); vec is scratch space.
func (c *codes) reconstruct(dst []byte, slot int32, vec []float32) ([]byte, []float32) {
	code := c.data[int(slot)*c.dims : int(slot+1)*c.dims]
	vec = vec[:0]
	for d, q := range code {
		vec = append(vec, c.lo[d]+float32(q)*c.step[d])
	}
	if c.metric != Cosine {
		return c.metric.appendValue(dst, vec), vec
	}
	// The header is the norm, which encode kept (0 for a zero vector): computing it again the
	// reference's way, as values written to the file must be, took 13% of the CPU samples of
	// a GloVe-50 chunk inserted through codes under a memory limit (one profile).
	dst = append(dst, TagItem)
	dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(c.aux[slot]))
	return vecmath.F32Bytes(dst, vec), vec
}

// links appends the preloaded layer-0 links of slot s to dst; ok is false if they were not
// preloaded.
func (c *packedLists) links(s int32, dst []uint32) ([]uint32, bool) {
	if s < 0 || s >= c.linksLoaded {
		return dst, false
	}
	return unpackList(dst, c.linkList(s)), true
}
