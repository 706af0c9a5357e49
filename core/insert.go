// This file holds the insertion of new and overwritten items into the graph.

package core

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/RoaringBitmap/roaring/v2"
)

// node returns the node of id, adding an empty one (fresh for a new item) if it has none.
func (b *builder) node(id uint32) *node {
	if n := b.nodes.get(id); n != nil {
		return n
	}
	return b.nodes.getOrPut(id, &node{fresh: b.newMoved != nil && b.newMoved.Contains(id)})
}

// isFresh reports whether id is a new item of this build (no links on disk). Every new item
// has a fresh node from prepareSources until flushLists moves its list out (newMoved).
func (b *builder) isFresh(id uint32) bool {
	if n := b.nodes.get(id); n != nil {
		return n.fresh
	}
	return b.newMoved != nil && b.newMoved.Contains(id)
}

// newSlot is the slot of a new item in newLists: its index in toInsert (ascending).
func (b *builder) newSlot(id uint32) int32 {
	i, _ := slices.BinarySearch(b.toInsert, id)
	return int32(i)
}

// movedNewList appends the layer-0 list of a new item that flushLists moved out of the table;
// ok is false if it has not been moved.
func (b *builder) movedNewList(id uint32, dst []uint32) ([]uint32, bool) {
	if b.newMoved == nil || !b.newMoved.Contains(id) {
		return dst, false
	}
	return b.newLists.links(b.newSlot(id), dst)
}

// movedList appends the layer-0 list flushLists moved out of the table for id, a new item's or
// an existing one's.
func (b *builder) movedList(id uint32, dst []uint32) ([]uint32, bool) {
	if out, ok := b.movedNewList(id, dst); ok {
		return out, true
	}
	if b.flushed == nil || !b.flushed.Contains(id) {
		return dst, false
	}
	return b.codes.links(b.codes.slot(id), dst)
}

// eachMoved calls fn for every item whose layer-0 list flushLists moved out of the table, with
// whether it is a new item of this build.
func (b *builder) eachMoved(fn func(id uint32, isNew bool)) {
	for _, moved := range []*roaring.Bitmap{b.flushed, b.newMoved} {
		if moved == nil {
			continue
		}
		for it := moved.Iterator(); it.HasNext(); {
			fn(it.Next(), moved == b.newMoved)
		}
	}
}

// loadLayer makes n's list on layer available in memory (from disk for an existing item), with
// links to items without a vector removed. n.mu must be held.
func (wk *worker) loadLayer(id uint32, n *node, layer int) (*layerLinks, error) {
	ll := n.layer(layer)
	if ll.loaded {
		return ll, nil
	}
	ll.loaded = true
	if n.fresh {
		if layer == 0 {
			ll.ids, _ = wk.b.movedNewList(id, ll.ids[:0])
		}
		return ll, nil
	}
	ids, err := wk.diskLinks(id, layer, wk.loadBuf[:0])
	if err != nil {
		return nil, err
	}
	wk.loadBuf = ids
	// A little room to grow (addLink re-prunes a full list): a build holds many of these, one
	// per existing item that gains a link.
	ll.ids = make([]uint32, 0, max(len(ids), min(len(ids)+4, wk.b.limit(layer))))
	for _, x := range ids {
		if x == id {
			n.dirty |= 1 << layer // drop self-links written by the reference
			continue
		}
		ok, err := wk.exists(x)
		if err != nil {
			return nil, err
		}
		if !ok {
			n.dirty |= 1 << layer
			continue
		}
		ll.ids = append(ll.ids, x)
	}
	return ll, nil
}

// scoreLinks appends ids to dst with their distances from id (+Inf where either has no
// vector).
func (wk *worker) scoreLinks(id uint32, ids []uint32, dst []scored) ([]scored, error) {
	v, err := wk.vector(id)
	if err != nil {
		return dst, err
	}
	v = wk.stable(v) // held while the others are read
	for _, x := range ids {
		u, err := wk.vector(x)
		if err != nil {
			return dst, err
		}
		d := float32(math.Inf(1))
		if v != nil && u != nil {
			d = wk.dist(v, u)
		}
		dst = append(dst, scored{d, x})
	}
	return dst, nil
}

// addLink adds a link from p to q (at distance d) on layer, re-pruning p's list with q when it
// is full.
func (wk *worker) addLink(p, q uint32, d float32, layer int) error {
	if p == q {
		return nil
	}
	n := wk.b.node(p)
	n.mu.Lock()
	defer n.mu.Unlock()
	ll, err := wk.loadLayer(p, n, layer)
	if err != nil {
		return err
	}
	if slices.Contains(ll.ids, q) {
		return nil
	}
	n.dirty |= 1 << layer
	if limit := wk.b.limit(layer); len(ll.ids) < limit {
		ll.ids = append(roomFor(ll.ids, limit), q)
		return nil
	}
	cands, err := wk.scoreLinks(p, ll.ids, wk.scratch[:0])
	if err != nil {
		return err
	}
	cands = append(cands, scored{d, q})
	wk.scratch = cands
	sel, err := wk.selectNeighbours(wk.sel[:0], cands, wk.b.limit(layer))
	if err != nil {
		return err
	}
	wk.sel = sel
	// Remember which existing item lost this incoming link: it may have been its last. (New
	// items are all checked anyway.)
	for _, c := range cands {
		if !slices.ContainsFunc(sel, func(s scored) bool { return s.id == c.id }) {
			if !wk.b.isFresh(c.id) || wk.b.relinking {
				wk.b.noteDropped(c.id, layer)
			}
		}
	}
	ll.ids = ll.ids[:0]
	for _, s := range sel {
		ll.ids = append(ll.ids, s.id)
	}
	return nil
}

func (b *builder) noteDropped(id uint32, layer int) {
	b.droppedMu.Lock()
	if b.dropped == nil {
		b.dropped = map[uint64]bool{}
	}
	b.dropped[uint64(id)<<8|uint64(layer)] = true
	b.droppedMu.Unlock()
}

// setLinks replaces the list of q on layer.
func (b *builder) setLinks(q uint32, layer int, links []scored) {
	b.setList(q, layer, len(links), func(ids []uint32) []uint32 {
		for _, s := range links {
			ids = append(ids, s.id)
		}
		return ids
	})
}

// setLinkIDs replaces the list of q on layer with ids.
func (b *builder) setLinkIDs(q uint32, layer int, ids []uint32) {
	b.setList(q, layer, len(ids), func(dst []uint32) []uint32 { return append(dst, ids...) })
}

// setList replaces the list of q on layer with the n ids fill appends.
func (b *builder) setList(q uint32, layer, n int, fill func([]uint32) []uint32) {
	nd := b.node(q)
	nd.mu.Lock()
	ll := nd.layer(layer)
	ll.loaded = true
	if cap(ll.ids) < n {
		// Room for a few links added later; roomFor grows it as they come.
		ll.ids = make([]uint32, 0, max(n, min(n+4, b.limit(layer))))
	}
	ll.ids = fill(ll.ids[:0])
	nd.dirty |= 1 << layer
	nd.mu.Unlock()
}

// topEntryPoints returns the graph's entry points and top layer.
func (b *builder) topEntryPoints() ([]uint32, int) {
	b.epMu.Lock()
	defer b.epMu.Unlock()
	return slices.Clone(b.eps), b.maxLevel
}

// insert links item q, of the given level, into the graph.
func (wk *worker) insert(q uint32, level int) error {
	b := wk.b
	qv, err := wk.vector(q)
	if err != nil {
		return err
	}
	if qv == nil {
		return fmt.Errorf("internal error: item %d to insert has no vector", q)
	}
	// Every layer of q that has no list on disk gets one (empty until linked), so that a links
	// entry exists for each of its layers.
	oldLevel, overwritten := b.oldLevels[q]
	n := b.node(q)
	n.mu.Lock()
	for l := 0; l <= level; l++ {
		if !overwritten || l > oldLevel {
			n.layer(l).loaded = true
			n.dirty |= 1 << l
		}
	}
	n.mu.Unlock()
	cur, top, err := wk.descend(qv, q, level)
	if err != nil {
		return err
	}
	for l := min(level, top); l >= 0 && len(cur) > 0; l-- {
		found, err := wk.searchLayer(qv, q, cur, l, b.opts.EfConstruction)
		if err != nil {
			return err
		}
		if len(found) == 0 {
			continue // q is alone on this layer; cur (q itself) is the way down
		}
		cur = append(cur[:0], found...)
		sel, err := wk.selectNeighbours(nil, found, b.limit(l))
		if err != nil {
			return err
		}
		b.setLinks(q, l, sel)
		for _, s := range sel {
			if err := wk.addLink(s.id, q, s.dist, l); err != nil {
				return err
			}
		}
	}
	b.epMu.Lock()
	if level > b.maxLevel {
		b.maxLevel = level
		b.eps = []uint32{q}
	} else if level == b.maxLevel && !slices.Contains(b.eps, q) {
		b.eps = append(b.eps, q)
	}
	b.epMu.Unlock()
	return nil
}

// insertAll inserts the items top-down: those that raise the graph's top one by one, then the
// rest in parallel.
func (b *builder) insertAll() error {
	order := slices.Clone(b.toInsert)
	slices.SortStableFunc(order, func(x, y uint32) int { return b.levels[y] - b.levels[x] })
	wk, err := b.newWorker()
	if err != nil {
		return err
	}
	i := 0
	for ; i < len(order) && b.levels[order[i]] > b.maxLevel; i++ {
		if err := wk.insert(order[i], b.levels[order[i]]); err != nil {
			return err
		}
		b.opts.Progress.add(1)
	}
	rest := order[i:]
	threads := min(b.opts.Threads, max(1, len(rest)/64))
	workers := []*worker{wk}
	for len(workers) < threads {
		w, err := b.newWorker()
		if err != nil {
			return err
		}
		workers = append(workers, w)
	}
	batch := len(rest)
	if b.insertBatch > 0 {
		batch = b.insertBatch
		b.newLists, b.newMoved = newPackedLists(len(b.toInsert)), roaring.New()
	}
	for lo := 0; lo < len(rest); lo += batch {
		if lo > 0 {
			b.flushLists()
		}
		if err := b.insertParallel(workers, rest[lo:min(lo+batch, len(rest))]); err != nil {
			return err
		}
	}
	return nil
}

// insertParallel inserts items on the workers' goroutines.
func (b *builder) insertParallel(workers []*worker, items []uint32) error {
	b.adviseInserts(items[:min(insertAhead, len(items))]) // the next window: at j = 0 below
	var next atomic.Int64
	var wg sync.WaitGroup
	for _, wk := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if r := recover(); r != nil {
					b.fail(fmt.Errorf("internal error while inserting: %v", r))
				}
			}()
			for n := 0; !b.failed.Load(); n++ {
				if n%32 == 0 {
					if err := b.cancelled(); err != nil {
						b.fail(err)
						return
					}
				}
				j := int(next.Add(1) - 1)
				if j >= len(items) {
					return
				}
				if j%insertAhead == 0 && j+insertAhead < len(items) {
					b.adviseInserts(items[j+insertAhead : min(j+2*insertAhead, len(items))])
				}
				if err := wk.insert(items[j], b.levels[items[j]]); err != nil {
					b.fail(err)
					return
				}
				b.opts.Progress.add(1)
			}
		}()
	}
	wg.Wait()
	return b.err
}

// flushLists moves layer-0 lists out of the node table between two batches of insertion (no
// worker runs): those of existing items into the codes' preloaded links, those of new items
// into newLists. A list the next batch needs is unpacked from there again, and writeLinks
// writes those of b.flushed and b.newMoved from there. Lists of items with links above layer 0
// in memory stay.
func (b *builder) flushLists() {
	type entry struct {
		slot int32
		id   uint32
	}
	var moved, movedNew []entry
	b.nodes.each(func(id uint32, n *node) {
		if len(n.layers) != 1 || !n.layers[0].loaded || n.dirty&^1 != 0 {
			return
		}
		if n.fresh {
			movedNew = append(movedNew, entry{b.newSlot(id), id})
		} else if s := b.codes.slot(id); s >= 0 && s < b.codes.linksLoaded {
			moved = append(moved, entry{s, id})
		}
	})
	// moveOut packs the changed lists of entries into lists and drops the entries' nodes; it
	// returns the items whose list it packed.
	moveOut := func(lists *packedLists, entries []entry) []uint32 {
		slices.SortFunc(entries, func(x, y entry) int { return cmp.Compare(x.slot, y.slot) })
		slots := make([]int32, 0, len(entries))
		var ids []uint32
		for _, e := range entries {
			if b.nodes.get(e.id).dirty != 0 { // a new item's always is
				slots = append(slots, e.slot)
				ids = append(ids, e.id)
			}
		}
		lists.replaceLinks(slots, func(i int) []uint32 {
			ll := &b.nodes.get(ids[i]).layers[0]
			slices.Sort(ll.ids)
			ll.ids = slices.Compact(ll.ids)
			return ll.ids
		})
		for _, e := range entries {
			b.nodes.del(e.id)
		}
		return ids
	}
	// Marked moved before their nodes go, so that isFresh stays true for new items.
	for _, e := range movedNew {
		b.newMoved.Add(e.id)
	}
	moveOut(b.newLists, movedNew)
	if b.flushed == nil {
		b.flushed = roaring.New()
	}
	b.flushed.AddMany(moveOut(&b.codes.packedLists, moved))
	if p := b.opts.Progress; p != nil {
		p.flushes.Add(1)
	}
}

// insertAhead is how many items ahead of the insertion the pages of the vectors to insert are
// asked for, in steps of as many, when the build reads the file through a page cache smaller
// than it (see adviseInserts).
const insertAhead = 64

// adviseInserts asks the kernel for the pages of the vectors of items, when the build does not
// expect the file to stay in memory. The vectors of a chunk added in this transaction are then
// pages of the map like any other (MDB_WRITEMAP), likely dropped since they were written; each
// is read as its item is inserted, and asked for together they are read in parallel instead of
// one blocking fault after another.
func (b *builder) adviseInserts(items []uint32) {
	if b.codes == nil && b.readMode != ReadDisk {
		return
	}
	for _, id := range items {
		if p := b.vecs.get(id); p != nil && p != &absentVector {
			adviseBytes(refBytes(p, b.valueLen), adviceWillNeed)
		}
	}
}
