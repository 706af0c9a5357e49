package core

import (
	"os"
	"syscall"
	"unsafe"
)

// prefetch asks the kernel to read ahead (madvise WILLNEED) the pages a search touches first:
// the upper layers from the entry points down, then layer 0 breadth-first from the items found
// there, vectors and links, until budget bytes have been advised. It is a hint: errors stop it
// silently and never fail the open.
func (r *Reader) prefetch(txn Txn, budget int64) {
	page := int64(os.Getpagesize())
	advise := func(v []byte) bool {
		if len(v) == 0 {
			return true
		}
		start := uintptr(unsafe.Pointer(unsafe.SliceData(v)))
		aligned := start &^ uintptr(page-1)
		length := int64(start-aligned) + int64(len(v))
		length = (length + page - 1) / page * page
		if length > budget {
			return false
		}
		budget -= length
		_, _, errno := syscall.Syscall(syscall.SYS_MADVISE, aligned, uintptr(length), 3 /* MADV_WILLNEED */)
		return errno == 0
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
