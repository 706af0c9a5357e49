// This file holds the repair of the links of deleted items.

package core

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
)

// repairDeletions relinks every item that had a link to a deleted item: it inherits the deleted
// item's links on that layer (FreshDiskANN's delete consolidation), pruned to the layer's limit.
// It also finds the graph's new top when entry points were deleted.
func (b *builder) repairDeletions() error {
	type job struct {
		id    uint32
		layer int
	}
	var jobs []job
	upper := map[int][]uint32{} // surviving items per layer >= 1
	// The surviving out-neighbours of deleted items may lose their only incoming link: count
	// the links each of them keeps, to reconnect those left with none.
	atRisk, err := b.deletedNeighbours()
	if err != nil {
		return err
	}
	scan := func(id uint32, layer int, links []uint32) {
		// Links of a deleted item go with it; links stored for an item the index does not hold
		// (a damaged or foreign key) are unreachable by any search: leave both alone.
		if b.toDelete.Contains(id) || !b.items.Contains(id) {
			return
		}
		if layer >= 1 {
			upper[layer] = append(upper[layer], id)
		}
		for _, x := range links {
			if b.toDelete.Contains(x) {
				jobs = append(jobs, job{id, layer})
				return
			}
		}
		for _, x := range links {
			if n, ok := atRisk[uint64(x)<<8|uint64(layer)]; ok {
				atRisk[uint64(x)<<8|uint64(layer)] = n + 1
			}
		}
	}
	if b.preloaded {
		for k, links := range b.preLinks {
			scan(uint32(k>>8), int(k&0xff), links)
		}
	} else {
		txn, err := b.w.db.env.BeginRead()
		if err != nil {
			return err
		}
		var ids []uint32
		err = scanPrefix(txn, b.w.db, ModePrefix(b.w.index, ModeLinks), func(k Key, v []byte) (bool, error) {
			ids, err = DecodeLinksValue(v, ids[:0])
			if err != nil {
				return false, fmt.Errorf("links of item %d layer %d: %w", k.Item, k.Layer, corruptf("%v", err))
			}
			scan(k.Item, int(k.Layer), ids)
			return true, nil
		})
		txn.Abort()
		if err != nil {
			return err
		}
	}
	if err := b.cancelled(); err != nil {
		return err
	}
	// The new top: the surviving items of the highest non-empty layer.
	epsLeft := slices.DeleteFunc(slices.Clone(b.eps), func(id uint32) bool { return b.toDelete.Contains(id) })
	if len(epsLeft) < len(b.eps) {
		b.eps, b.maxLevel = nil, -1
		for l := 255; l >= 1; l-- {
			if len(upper[l]) > 0 {
				b.eps, b.maxLevel = upper[l], l
				break
			}
		}
		if b.maxLevel < 0 {
			// Only layer 0 is left: any surviving indexed item will do.
			survivors := b.items.Clone()
			for _, id := range b.toInsert {
				if b.nodes.get(id) != nil && b.nodes.get(id).fresh {
					survivors.Remove(id)
				}
			}
			if !survivors.IsEmpty() {
				b.eps, b.maxLevel = []uint32{survivors.Minimum()}, 0
			}
		}
		slices.Sort(b.eps)
	}
	// Relink in parallel.
	var next atomic.Int64
	var wg sync.WaitGroup
	threads := min(b.opts.Threads, max(1, len(jobs)/16))
	for t := 0; t < threads; t++ {
		wk, err := b.newWorker()
		if err != nil {
			b.fail(err)
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if r := recover(); r != nil {
					b.fail(fmt.Errorf("internal error while repairing: %v", r))
				}
			}()
			for !b.failed.Load() {
				j := int(next.Add(1) - 1)
				if j >= len(jobs) {
					return
				}
				if err := wk.repair(jobs[j].id, jobs[j].layer); err != nil {
					b.fail(err)
					return
				}
				if j%64 == 0 {
					if err := b.cancelled(); err != nil {
						b.fail(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if b.err != nil {
		return b.err
	}
	// Count the links of the relinked lists, then reconnect the items no link points to.
	for _, j := range jobs {
		n := b.nodes.get(j.id)
		for _, x := range n.layers[j.layer].ids {
			if c, ok := atRisk[uint64(x)<<8|uint64(j.layer)]; ok {
				atRisk[uint64(x)<<8|uint64(j.layer)] = c + 1
			}
		}
	}
	var orphans []uint64
	for k, c := range atRisk {
		if c == 0 {
			orphans = append(orphans, k)
		}
	}
	slices.Sort(orphans)
	if len(orphans) > 0 {
		wk, err := b.newWorker()
		if err != nil {
			return err
		}
		for _, k := range orphans {
			if err := wk.reconnect(uint32(k>>8), int(k&0xff), nil); err != nil {
				return err
			}
		}
	}
	b.opts.Progress.add(b.toDelete.GetCardinality())
	return nil
}

// deletedNeighbours returns the surviving items that deleted items link to, per layer
// (key id<<8 | layer), each with a count of 0.
func (b *builder) deletedNeighbours() (map[uint64]int, error) {
	out := map[uint64]int{}
	wk, err := b.newWorker()
	if err != nil {
		return nil, err
	}
	for it := b.toDelete.Iterator(); it.HasNext(); {
		d := it.Next()
		for l := 0; l <= 255; l++ {
			links, err := wk.diskLinks(d, l, nil)
			if err != nil {
				return nil, err
			}
			if len(links) == 0 && l > 0 {
				break
			}
			for _, y := range links {
				if !b.toDelete.Contains(y) {
					out[uint64(y)<<8|uint64(l)] = 0
				}
			}
		}
	}
	return out, nil
}

// reconnect gives item id, which no link points to on layer any more, an incoming link from the
// nearest item that keeps it after pruning; failing that, it replaces the farthest link of its
// nearest item.
func (wk *worker) reconnect(id uint32, layer int, seeds []scored) error {
	v, err := wk.vector(id)
	if err != nil || v == nil {
		return err
	}
	v = wk.stable(v) // held through a layer search
	if seeds == nil {
		if wk.ids, err = wk.neighbours(id, layer, wk.ids[:0]); err != nil {
			return err
		}
		for _, x := range wk.ids {
			if u, err := wk.vector(x); err != nil {
				return err
			} else if u != nil {
				seeds = append(seeds, scored{wk.dist(v, u), x})
			}
		}
	}
	if len(seeds) == 0 {
		return nil
	}
	found, err := wk.searchLayer(v, id, seeds, layer, wk.b.opts.EfConstruction)
	if err != nil {
		return err
	}
	found = slices.Clone(found)
	if len(found) == 0 {
		return nil
	}
	for _, w := range found {
		if err := wk.addLink(w.id, id, w.dist, layer); err != nil {
			return err
		}
		if wk.hasLink(w.id, id, layer) {
			return nil
		}
	}
	// Every candidate pruned it: take the place of the nearest item's farthest link.
	w := found[0]
	n := wk.b.node(w.id)
	n.mu.Lock()
	defer n.mu.Unlock()
	ll, err := wk.loadLayer(w.id, n, layer)
	if err != nil {
		return err
	}
	links, err := wk.scoreLinks(w.id, ll.ids, wk.scratch[:0])
	if err != nil {
		return err
	}
	wk.scratch = links
	sortScored(links)
	if limit := wk.b.limit(layer); len(links) >= limit {
		links = links[:limit-1]
	}
	ll.ids = ll.ids[:0]
	for _, s := range links {
		ll.ids = append(ll.ids, s.id)
	}
	ll.ids = append(roomFor(ll.ids, wk.b.limit(layer)), id)
	n.dirty |= 1 << layer
	return nil
}

// hasLink reports whether p's in-memory list on layer holds q.
func (wk *worker) hasLink(p, q uint32, layer int) bool {
	n := wk.b.nodes.get(p)
	if n == nil {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if layer >= len(n.layers) {
		return false
	}
	return slices.Contains(n.layers[layer].ids, q)
}

// repair relinks id on layer without its deleted neighbours.
func (wk *worker) repair(id uint32, layer int) error {
	b := wk.b
	own, err := wk.diskLinks(id, layer, nil)
	if err != nil {
		return err
	}
	seen := newVisitedSet(64)
	seen.insert(id)
	var cands []uint32
	add := func(x uint32) error {
		if !seen.insert(x) {
			return nil
		}
		v, err := wk.vector(x)
		if err != nil || v == nil {
			return err
		}
		cands = append(cands, x)
		return nil
	}
	for _, x := range own {
		if b.toDelete.Contains(x) {
			inherited, err := wk.diskLinks(x, layer, nil)
			if err != nil {
				return err
			}
			for _, y := range inherited {
				if err := add(y); err != nil {
					return err
				}
			}
		} else if err := add(x); err != nil {
			return err
		}
	}
	if len(cands) <= b.limit(layer) {
		b.setLinkIDs(id, layer, cands)
		return nil
	}
	links, err := wk.scoreLinks(id, cands, nil)
	if err != nil {
		return err
	}
	if links, err = wk.selectNeighbours(nil, links, b.limit(layer)); err != nil {
		return err
	}
	b.setLinks(id, layer, links)
	return nil
}
