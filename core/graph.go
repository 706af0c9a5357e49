package core

import (
	"sync"
	"sync/atomic"
	"unsafe"
)

// node is the in-memory state of an item whose links change in this build: a new item, or an
// existing one that gains links or loses a deleted neighbour. Items the build does not touch
// stay on disk only.
type node struct {
	mu sync.Mutex
	// fresh marks an item that has no links on disk (new in this build).
	fresh bool
	// layers[l] is the neighbour list on layer l once loaded or set.
	layers []layerLinks
	// dirty has bit l set when layer l must be written.
	dirty uint64
}

type layerLinks struct {
	loaded bool
	// ids are the neighbours, without their distances: a build holds one list per item it
	// touches, and a pruning recomputes the few distances it needs far faster than the
	// neighbour selection that follows (half the memory of keeping them).
	ids []uint32
}

// roomFor returns ids with room for one more, grown by half (at most to limit while it is
// under limit) when full.
func roomFor(ids []uint32, limit int) []uint32 {
	if len(ids) < cap(ids) {
		return ids
	}
	c := max(len(ids)+len(ids)/2, 4)
	if len(ids) < limit {
		c = min(c, limit)
	}
	return append(make([]uint32, 0, c), ids...)
}

func (n *node) layer(l int) *layerLinks {
	for len(n.layers) <= l {
		n.layers = append(n.layers, layerLinks{})
	}
	return &n.layers[l]
}

// table maps item ids to pointers: a flat array when ids are dense enough, a sharded hash map
// otherwise. It is safe for concurrent use.
type table[T any] struct {
	dense  []atomic.Pointer[T]
	shards []shard[T]
}

type shard[T any] struct {
	mu sync.RWMutex
	m  map[uint32]*T
}

const tableShards = 64

// newTable sizes the table for ids up to maxID among about count items.
func newTable[T any](maxID uint32, count uint64) *table[T] {
	if denseIDs(maxID, count) {
		return &table[T]{dense: make([]atomic.Pointer[T], uint64(maxID)+1)}
	}
	t := &table[T]{shards: make([]shard[T], tableShards)}
	for i := range t.shards {
		t.shards[i].m = map[uint32]*T{}
	}
	return t
}

// size is the number of slots of a dense table (0 for a sharded one).
func (t *table[T]) size() int { return len(t.dense) }

// inRange reports whether id can be stored.
func (t *table[T]) inRange(id uint32) bool { return t.dense == nil || int(id) < len(t.dense) }

func (t *table[T]) get(id uint32) *T {
	if t.dense != nil {
		if int(id) < len(t.dense) {
			return t.dense[id].Load()
		}
		return nil
	}
	s := &t.shards[hash32(id)%tableShards]
	s.mu.RLock()
	v := s.m[id]
	s.mu.RUnlock()
	return v
}

// getOrPut returns the value of id, storing v first if there is none.
func (t *table[T]) getOrPut(id uint32, v *T) *T {
	if t.dense != nil {
		if t.dense[id].CompareAndSwap(nil, v) {
			return v
		}
		return t.dense[id].Load()
	}
	s := &t.shards[hash32(id)%tableShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.m[id]; ok {
		return old
	}
	s.m[id] = v
	return v
}

// put stores v for id.
func (t *table[T]) put(id uint32, v *T) {
	if t.dense != nil {
		t.dense[id].Store(v)
		return
	}
	s := &t.shards[hash32(id)%tableShards]
	s.mu.Lock()
	s.m[id] = v
	s.mu.Unlock()
}

// del removes id (not concurrently with readers or writers of it).
func (t *table[T]) del(id uint32) {
	if t.dense != nil {
		if int(id) < len(t.dense) {
			t.dense[id].Store(nil)
		}
		return
	}
	s := &t.shards[hash32(id)%tableShards]
	s.mu.Lock()
	delete(s.m, id)
	s.mu.Unlock()
}

// each calls fn for every stored id (not concurrently with writers).
func (t *table[T]) each(fn func(id uint32, v *T)) {
	if t.dense != nil {
		for i := range t.dense {
			if v := t.dense[i].Load(); v != nil {
				fn(uint32(i), v)
			}
		}
		return
	}
	for i := range t.shards {
		for id, v := range t.shards[i].m {
			fn(id, v)
		}
	}
}

// absentVector marks, in a vector table, an item known to have no vector (deleted).
var absentVector byte

// vectorRef points at the first byte of an item value in LMDB memory (a page of the memory map
// or of the write transaction). All values of an index have the same length.
type vectorRef = byte

func refBytes(p *vectorRef, n int) []byte { return unsafe.Slice(p, n) }
