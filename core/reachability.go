// This file holds the final reachability passes: reconnecting orphaned items and linking every
// item into layer 0 from the entry points.

package core

import (
	"slices"

	"github.com/RoaringBitmap/roaring/v2"
)

// fixOrphans reconnects the items that no link points to any more on some layer: new items
// whose every incoming link was pruned (counted exactly, since only lists in memory can link to
// a new item), and existing items that lost an incoming link in a pruning and have no other one
// among their neighbourhood (two hops).
func (b *builder) fixOrphans() error {
	wk, err := b.newWorker()
	if err != nil {
		return err
	}
	b.relinking = true
	for round := 0; round < 3; round++ {
		counts := map[uint64]int{}
		if round == 0 {
			for _, id := range b.toInsert {
				if b.isFresh(id) {
					for l := 0; l <= b.levels[id]; l++ {
						counts[uint64(id)<<8|uint64(l)] = 0
					}
				}
			}
		}
		b.droppedMu.Lock()
		dropped := b.dropped
		b.dropped = nil
		b.droppedMu.Unlock()
		for k := range dropped {
			counts[k] = 0
		}
		if len(counts) == 0 {
			return nil
		}
		count := func(ids []uint32, l int) {
			for _, x := range ids {
				key := uint64(x)<<8 | uint64(l)
				if c, ok := counts[key]; ok {
					counts[key] = c + 1
				}
			}
		}
		b.nodes.each(func(id uint32, n *node) {
			for l := range n.layers {
				count(n.layers[l].ids, l)
			}
		})
		// Lists moved out of the table (flushLists) can link to new items too.
		var buf []uint32
		b.eachMoved(func(id uint32, _ bool) {
			if n := b.nodes.get(id); n == nil || len(n.layers) == 0 || !n.layers[0].loaded {
				buf, _ = b.movedList(id, buf[:0])
				count(buf, 0)
			}
		})
		eps, top := b.topEntryPoints()
		var orphans []uint64
		for k, c := range counts {
			id, l := uint32(k>>8), int(k&0xff)
			if c > 0 || (l == top && slices.Contains(eps, id)) {
				continue
			}
			if v, err := wk.vector(id); err != nil {
				return err
			} else if v == nil {
				continue
			}
			if !b.isFresh(id) {
				linked, err := wk.linkedNearby(id, l)
				if err != nil {
					return err
				}
				if linked {
					continue
				}
			}
			orphans = append(orphans, k)
		}
		slices.Sort(orphans)
		for _, k := range orphans {
			if err := wk.reconnect(uint32(k>>8), int(k&0xff), nil); err != nil {
				return err
			}
		}
		if err := b.cancelled(); err != nil {
			return err
		}
	}
	return nil
}

// linkedNearby reports whether an item within two hops of id on layer links to it.
func (wk *worker) linkedNearby(id uint32, layer int) (bool, error) {
	first, err := wk.neighbours(id, layer, nil)
	if err != nil {
		return false, err
	}
	seen := newVisitedSet(256)
	seen.insert(id)
	var buf []uint32
	for hop := 0; hop < 2; hop++ {
		var next []uint32
		for _, x := range first {
			if !seen.insert(x) {
				continue
			}
			if buf, err = wk.neighbours(x, layer, buf[:0]); err != nil {
				return false, err
			}
			if slices.Contains(buf, id) {
				return true, nil
			}
			next = append(next, buf...)
		}
		first = next
	}
	return false, nil
}

// ensureReachable walks layer 0 from the entry points and links every item it does not reach
// to the nearest items a search from the top finds (which are reachable), walking on from it.
func (b *builder) ensureReachable() error {
	eps, _ := b.topEntryPoints()
	if len(eps) == 0 {
		return nil
	}
	wk, err := b.newWorker()
	if err != nil {
		return err
	}
	for round := 0; round < 3; round++ {
		reached := roaring.New()
		var queue, buf []uint32
		walk := func() error {
			for len(queue) > 0 {
				x := queue[len(queue)-1]
				queue = queue[:len(queue)-1]
				if buf, err = wk.neighbours(x, 0, buf[:0]); err != nil {
					return err
				}
				for _, y := range buf {
					if !reached.Contains(y) {
						if ok, err := wk.exists(y); err != nil {
							return err
						} else if ok {
							reached.Add(y)
							queue = append(queue, y)
						}
					}
				}
			}
			return nil
		}
		for _, e := range eps {
			if reached.CheckedAdd(e) {
				queue = append(queue, e)
			}
		}
		if err := walk(); err != nil {
			return err
		}
		missing := roaring.AndNot(b.items, reached)
		if missing.IsEmpty() {
			return nil
		}
		for it := missing.Iterator(); it.HasNext(); {
			z := it.Next()
			if reached.Contains(z) {
				continue
			}
			v, err := wk.vector(z)
			if err != nil {
				return err
			}
			if v == nil {
				continue
			}
			seeds, _, err := wk.descend(wk.stable(v), z, 0)
			if err != nil {
				return err
			}
			if err := wk.reconnect(z, 0, seeds); err != nil {
				return err
			}
			reached.Add(z)
			queue = append(queue, z)
			if err := walk(); err != nil {
				return err
			}
			if err := b.cancelled(); err != nil {
				return err
			}
		}
	}
	return nil
}
