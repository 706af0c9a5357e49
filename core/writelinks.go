// This file holds the write-back of the changed links to the write transaction.

package core

import (
	"cmp"
	"fmt"
	"slices"
)

// writeLinks writes the lists that changed, deletes the links of deleted items, and removes
// links of overwritten items above their new level (none: they keep their level).
func (b *builder) writeLinks() error {
	type entry struct {
		id    uint32
		n     *node // nil: only a layer-0 list moved out of the table (flushLists)
		fresh bool
	}
	var changed []entry
	b.nodes.each(func(id uint32, n *node) {
		if n.dirty != 0 {
			changed = append(changed, entry{id, n, n.fresh})
		}
	})
	b.eachMoved(func(id uint32, isNew bool) {
		if n := b.nodes.get(id); n == nil || n.dirty == 0 {
			changed = append(changed, entry{id, nil, isNew})
		}
	})
	// Write in a scattered (but deterministic) order: LMDB splits a full page in the middle, so
	// keys written in ascending order leave every page half empty, while scattered writes fill
	// pages to about 70%, as the reference's hash-map order does. But a build short of memory
	// (reading through codes or the disk) rewrites lists already in the file in key order:
	// scattered, each rewrite would read a page the page cache no longer holds, and lists of
	// the same page would read it again and again. Only new items' lists, new keys, are
	// scattered there.
	short := b.readMode == ReadCompressed || b.readMode == ReadDisk
	slices.SortFunc(changed, func(x, y entry) int {
		if short {
			if x.fresh != y.fresh {
				if y.fresh {
					return -1
				}
				return 1
			}
			if !x.fresh {
				return cmp.Compare(x.id, y.id)
			}
		}
		return cmp.Compare(splitmix64(uint64(x.id)), splitmix64(uint64(y.id)))
	})
	p := b.opts.Progress
	p.set(PhaseWritingLinks, uint64(len(changed))+b.toDelete.GetCardinality())
	dbi := b.w.db.dbi
	var key, val []byte
	var ids []uint32
	for i, e := range changed {
		if i%4096 == 0 {
			if err := b.cancelled(); err != nil {
				return err
			}
		}
		put := func(l int, ids []uint32) error {
			var err error
			if val, err = AppendLinksValue(val[:0], ids); err != nil {
				return err
			}
			key = LinksKey(b.w.index, e.id, uint8(l)).Append(key[:0])
			if err := b.txn.put(dbi, key, val); err != nil {
				return fmt.Errorf("write links of item %d: %w", e.id, err)
			}
			return nil
		}
		var dirty uint64
		if e.n != nil {
			dirty = e.n.dirty
			for l := range e.n.layers {
				if dirty&(1<<l) == 0 || !e.n.layers[l].loaded {
					continue
				}
				ids = append(ids[:0], e.n.layers[l].ids...)
				slices.Sort(ids)
				if err := put(l, slices.Compact(ids)); err != nil {
					return err
				}
			}
		}
		if dirty&1 == 0 {
			// Sorted and without repeats, as flushLists packed it.
			var moved bool
			if ids, moved = b.movedList(e.id, ids[:0]); moved {
				if err := put(0, ids); err != nil {
					return err
				}
			}
		}
		p.add(1)
	}
	for it := b.toDelete.Iterator(); it.HasNext(); {
		id := it.Next()
		prefix := append(ModePrefix(b.w.index, ModeLinks), byte(id>>24), byte(id>>16), byte(id>>8), byte(id))
		if err := deletePrefix(b.txn, b.w.db, prefix); err != nil {
			return fmt.Errorf("delete links of item %d: %w", id, err)
		}
		p.add(1)
	}
	return nil
}
