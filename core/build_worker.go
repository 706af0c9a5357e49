// This file holds the build worker: its per-goroutine state, access to vectors and links, and
// the HNSW search and neighbour-selection primitives the build steps use.

package core

import (
	"fmt"
	"slices"

	"github.com/hannoy-go/hannoy/core/internal/vecmath"
)

// worker holds what one goroutine needs: its read transaction and search scratch space.
type worker struct {
	b       *builder
	txn     *ReadTxn
	visited *visitedSet
	cand    minHeap
	res     maxHeap
	ids     []uint32
	sel     []scored
	scratch []scored
	pend    pending
	near    []nearItem

	// With codes: values rebuilt from them, in a ring of slots reused in turn. A value from
	// vector stays valid for the next ringSlots-1 calls; one held longer is copied (stable).
	ring     []byte
	ringNext int
	floats   []float32
	held     []byte
	cq       codeQuery
	loadBuf  []uint32

	kept    [][]byte // selectNeighbours: the kept candidates' values
	keptBuf []byte   // with codes: copies of them
}

// ringSlots is how many values rebuilt from codes a worker keeps valid at once: more than any
// caller holds (a neighbour list being scored, plus the value it is scored against).
func (b *builder) ringSlots() int { return 2*b.opts.M0 + 16 }

func (b *builder) newWorker() (*worker, error) {
	wk := &worker{b: b, visited: newVisitedSet(1024)}
	if !b.preloaded {
		txn, err := b.parentSnapshot()
		if err != nil {
			return nil, err
		}
		wk.txn = txn
	}
	if b.codes != nil {
		wk.ring = make([]byte, b.ringSlots()*b.valueLen)
	}
	return wk, nil
}

// stable returns v, or a copy of it if it may be a value rebuilt from codes, valid until the
// next call of stable.
func (wk *worker) stable(v []byte) []byte {
	if wk.ring == nil || v == nil {
		return v
	}
	wk.held = append(wk.held[:0], v...)
	return wk.held
}

// vector returns the value of item id, or nil if it has none (deleted).
func (wk *worker) vector(id uint32) ([]byte, error) {
	b := wk.b
	if !b.vecs.inRange(id) {
		return nil, nil // a link to an id beyond every item: treated as deleted
	}
	if p := b.vecs.get(id); p != nil {
		if p == &absentVector {
			return nil, nil
		}
		return refBytes(p, b.valueLen), nil
	}
	if b.preloaded {
		return nil, nil
	}
	if b.codes != nil {
		slot := b.codes.slot(id)
		if slot < 0 {
			return nil, nil // not an item of the last commit, nor of this build: deleted
		}
		at := wk.ringNext * b.valueLen
		wk.ringNext = (wk.ringNext + 1) % b.ringSlots()
		var v []byte
		v, wk.floats = b.codes.reconstruct(wk.ring[at:at:at+b.valueLen], slot, wk.floats)
		return v, nil
	}
	v, ok, err := get(wk.txn, b.w.db, ItemKey(b.w.index, id))
	if err != nil {
		return nil, err
	}
	if !ok {
		b.vecs.put(id, &absentVector)
		return nil, nil
	}
	if len(v) != b.valueLen {
		return nil, fmt.Errorf("item %d: %w", id, corruptf("value of %d bytes, expected %d", len(v), b.valueLen))
	}
	if v[0] != TagItem {
		return nil, fmt.Errorf("item %d: %w", id, corruptf("tag %d is not an item's", v[0]))
	}
	b.vecs.put(id, &v[0])
	return v, nil
}

// exists reports whether item id has a vector, without rebuilding it from codes.
func (wk *worker) exists(id uint32) (bool, error) {
	b := wk.b
	if !b.vecs.inRange(id) {
		return false, nil
	}
	if p := b.vecs.get(id); p != nil {
		return p != &absentVector, nil
	}
	if b.preloaded {
		return false, nil
	}
	if b.codes != nil {
		return b.codes.slot(id) >= 0, nil
	}
	v, err := wk.vector(id)
	return v != nil, err
}

// diskLinks appends the links of id on layer as stored in the base graph.
func (wk *worker) diskLinks(id uint32, layer int, dst []uint32) ([]uint32, error) {
	b := wk.b
	if b.preloaded {
		return append(dst, b.preLinks[uint64(id)<<8|uint64(layer)]...), nil
	}
	if layer > 255 {
		return dst, nil
	}
	if layer == 0 && b.codes != nil {
		if out, ok := b.codes.links(b.codes.slot(id), dst); ok {
			return out, nil
		}
	}
	v, ok, err := get(wk.txn, b.w.db, LinksKey(b.w.index, id, uint8(layer)))
	if err != nil || !ok {
		return dst, err
	}
	dst, err = DecodeLinksValue(v, dst)
	if err != nil {
		return dst, fmt.Errorf("links of item %d on layer %d: %w", id, layer, corruptf("%v", err))
	}
	return dst, nil
}

// neighbours appends the current links of id on layer: the in-memory list if the build changed
// it, the base graph's otherwise.
func (wk *worker) neighbours(id uint32, layer int, dst []uint32) ([]uint32, error) {
	if n := wk.b.nodes.get(id); n != nil {
		n.mu.Lock()
		if layer < len(n.layers) && n.layers[layer].loaded {
			dst = append(dst, n.layers[layer].ids...)
			n.mu.Unlock()
			return dst, nil
		}
		fresh := n.fresh
		n.mu.Unlock()
		if fresh {
			if layer == 0 {
				dst, _ = wk.b.movedNewList(id, dst)
			}
			return dst, nil
		}
	} else if layer == 0 {
		if out, ok := wk.b.movedNewList(id, dst); ok {
			return out, nil
		}
	}
	return wk.diskLinks(id, layer, dst)
}

func (wk *worker) dist(a, b []byte) float32 { return wk.b.metric.distance(a, b) }

// distIDs is the distance between two stored items; ok is false if either has no vector.
func (wk *worker) distIDs(a, b uint32) (float32, bool, error) {
	va, err := wk.vector(a)
	if err != nil || va == nil {
		return 0, false, err
	}
	vb, err := wk.vector(b)
	if err != nil || vb == nil {
		return 0, false, err
	}
	return wk.dist(va, vb), true, nil
}

// nearItem is a neighbour located for a distance through codes: its exact value (this
// build's own items) or its slot in the codes.
type nearItem struct {
	id    uint32
	slot  int32
	exact *vectorRef
}

// locate finds where the walk through codes reads item id from: its exact value if the build
// holds one (p), else its slot in the codes, whose lines it asks the CPU for. ok is false if
// the item has no vector.
func (wk *worker) locate(id uint32) (p *vectorRef, slot int32, ok bool) {
	b := wk.b
	if b.vecs.inRange(id) {
		if p := b.vecs.get(id); p != nil {
			if p == &absentVector {
				return nil, -1, false
			}
			vecmath.Prefetch(refBytes(p, b.valueLen))
			return p, -1, true
		}
	}
	if slot = b.codes.slot(id); slot < 0 {
		return nil, -1, false
	}
	b.codes.prefetch(slot)
	return nil, slot, true
}

// prepareQuery readies the codes for distances to qv (with codes only).
func (wk *worker) prepareQuery(qv []byte) {
	m := wk.b.metric
	wk.floats = m.decodeVector(wk.floats[:0], qv[1+m.headerSize():], wk.b.w.dims)
	wk.b.codes.prepare(&wk.cq, wk.floats)
}

// searchLayer is HNSW's beam search on one layer from eps, returning up to ef closest items
// ascending. self is never returned.
func (wk *worker) searchLayer(qv []byte, self uint32, eps []scored, layer, ef int) ([]scored, error) {
	if wk.b.codes != nil {
		wk.prepareQuery(qv)
	}
	wk.visited.reset()
	wk.cand = wk.cand[:0]
	wk.res = wk.res[:0]
	// self is walked through (an overwritten item may be the only way to its old neighbours)
	// but never returned.
	offer := func(s scored) {
		if s.id == self {
			return
		}
		if len(wk.res) < ef {
			wk.res.push(s)
		} else if before(s, wk.res.top()) {
			wk.res.replaceTop(s)
		}
	}
	// consider makes a reached item a candidate if it is among the ef best so far.
	consider := func(s scored) {
		if len(wk.res) < ef || before(s, wk.res.top()) {
			wk.cand.push(s)
			offer(s)
		}
	}
	for _, e := range eps {
		if wk.visited.insert(e.id) {
			wk.cand.push(e)
			offer(e)
		}
	}
	for len(wk.cand) > 0 {
		c := wk.cand.pop()
		if len(wk.res) >= ef && c.dist > wk.res.top().dist {
			break
		}
		var err error
		wk.ids, err = wk.neighbours(c.id, layer, wk.ids[:0])
		if err != nil {
			return nil, err
		}
		wk.pend.reset()
		wk.near = wk.near[:0]
		for _, id := range wk.ids {
			if !wk.visited.insert(id) {
				continue
			}
			if wk.b.codes != nil {
				// Straight from the codes to the query: no value rebuilt. Each neighbour is
				// located and its code asked for first, so that the hop's cache misses overlap.
				if p, slot, ok := wk.locate(id); ok {
					wk.near = append(wk.near, nearItem{id, slot, p})
				}
				continue
			}
			v, err := wk.vector(id)
			if err != nil {
				return nil, err
			}
			if v != nil {
				wk.pend.add(id, v)
			}
		}
		for _, it := range wk.near {
			var d float32
			if it.exact != nil {
				d = wk.dist(qv, refBytes(it.exact, wk.b.valueLen))
			} else {
				d = wk.b.codes.dist(&wk.cq, it.slot)
			}
			consider(scored{d, it.id})
		}
		wk.pend.compute(wk.b.metric, qv)
		for i, id := range wk.pend.ids {
			consider(scored{wk.pend.dists[i], id})
		}
	}
	out := append(wk.scratch[:0], wk.res...)
	sortScored(out)
	wk.scratch = out
	return out, nil
}

// selectNeighbours is the neighbour-selection heuristic: candidates ascending, each kept unless
// a kept one is closer to it (times alpha) than it is to the query, until limit are kept.
// Candidates whose vector is gone are dropped. The result is written over dst's storage.
func (wk *worker) selectNeighbours(dst, cands []scored, limit int) ([]scored, error) {
	sortScored(cands)
	alpha := wk.b.opts.Alpha
	// The values of the kept candidates, each fetched once: with codes, each fetch rebuilds
	// the value (fetched for every candidate it was compared with, rebuilding 256-d values took
	// 27% of the CPU of a million-item chunk, one profile), and a rebuilt value is copied, as
	// the ring of them turns over before the candidates run out.
	kept := wk.kept[:0]
	if wk.ring != nil {
		wk.keptBuf = slices.Grow(wk.keptBuf[:0], limit*wk.b.valueLen)[:limit*wk.b.valueLen]
	}
	dst = dst[:0]
	for _, c := range cands {
		if len(dst) >= limit {
			break
		}
		vc, err := wk.vector(c.id)
		if err != nil {
			return nil, err
		}
		if vc == nil {
			continue
		}
		keep := true
		for _, vs := range kept {
			if alpha*wk.dist(vc, vs) < c.dist {
				keep = false
				break
			}
		}
		if keep {
			if wk.ring != nil {
				at := len(kept) * wk.b.valueLen
				vc = append(wk.keptBuf[at:at], vc...)
			}
			kept = append(kept, vc)
			dst = append(dst, c)
		}
	}
	clear(kept) // no value outlives the call
	wk.kept = kept[:0]
	return dst, nil
}

func (b *builder) limit(layer int) int {
	if layer == 0 {
		return b.opts.M0
	}
	return b.opts.M
}

// descend returns the entry for a search of v on layer: the closest entry point, walked greedily
// down the layers above; and the graph's top layer.
func (wk *worker) descend(v []byte, self uint32, layer int) ([]scored, int, error) {
	eps, top := wk.b.topEntryPoints()
	var cur []scored
	for _, e := range eps {
		u, err := wk.vector(e)
		if err != nil {
			return nil, top, err
		}
		if u != nil {
			cur = append(cur, scored{wk.dist(v, u), e})
		}
	}
	sortScored(cur)
	if len(cur) > 1 {
		cur = cur[:1]
	}
	for l := top; l > layer && len(cur) > 0; l-- {
		found, err := wk.searchLayer(v, self, cur, l, 1)
		if err != nil {
			return nil, top, err
		}
		if len(found) > 0 {
			cur = append(cur[:0], found[0])
		}
	}
	return cur, top, nil
}
