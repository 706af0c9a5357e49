package core

import "unsafe"

// prefetch asks the kernel to read ahead (madvise WILLNEED) the pages a search touches first:
// the upper layers from the entry points down, then layer 0 breadth-first from the items found
// there, vectors and links, until budget bytes have been advised. It is a hint: errors stop it
// silently and never fail the open.
func (r *Reader) prefetch(txn Txn, budget int64) {
	advise := func(v []byte) bool {
		if len(v) == 0 {
			return true
		}
		_, span := pageSpan(uintptr(unsafe.Pointer(unsafe.SliceData(v))), uintptr(len(v)))
		length := int64(span)
		if length > budget {
			return false
		}
		budget -= length
		adviseBytes(v, adviceWillNeed)
		return true
	}
	seen := newVisitedSet(1024)
	frontier := append([]uint32(nil), r.meta.EntryPoints...)
	var ids []uint32
	for layer := int(r.meta.MaxLevel); layer >= 0; layer-- {
		seen.reset()
		queue := append([]uint32(nil), frontier...)
		for i := 0; i < len(queue); i++ {
			id := queue[i]
			if !seen.insert(id) {
				continue
			}
			v, ok, err := get(txn, r.db, LinksKey(r.index, id, uint8(layer)))
			if err != nil || !ok || !advise(v) {
				return
			}
			if layer == 0 {
				vec, ok, err := get(txn, r.db, ItemKey(r.index, id))
				if err != nil || !ok || !advise(vec) {
					return
				}
			}
			if ids, err = DecodeLinksValue(v, ids[:0]); err != nil {
				return
			}
			queue = append(queue, ids...)
		}
		frontier = queue
	}
}
