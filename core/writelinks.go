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
		id uint32
		n  *node
	}
	var changed []entry
	b.nodes.each(func(id uint32, n *node) {
		if n.dirty != 0 {
			changed = append(changed, entry{id, n})
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
			if x.n.fresh != y.n.fresh {
				if y.n.fresh {
					return -1
				}
				return 1
			}
			if !x.n.fresh {
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
		for l := range e.n.layers {
			if e.n.dirty&(1<<l) == 0 || !e.n.layers[l].loaded {
				continue
			}
			ids = append(ids[:0], e.n.layers[l].ids...)
			slices.Sort(ids)
			ids = slices.Compact(ids)
			var err error
			if val, err = AppendLinksValue(val[:0], ids); err != nil {
				return err
			}
			key = LinksKey(b.w.index, e.id, uint8(l)).Append(key[:0])
			if err := b.txn.put(dbi, key, val); err != nil {
				return fmt.Errorf("write links of item %d: %w", e.id, err)
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
