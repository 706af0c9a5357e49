package core

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/PowerDNS/lmdb-go/lmdb"
	"github.com/RoaringBitmap/roaring/v2"

	"github.com/hannoy-go/hannoy/core/internal/vecmath"
)

// Reader searches one built index. It holds a copy of the index metadata taken from the
// transaction it was opened with; pass that transaction, or another one on the same snapshot,
// to its methods. A Reader is safe for concurrent use by many goroutines, each with its own
// transaction.
type Reader struct {
	db       *Database
	index    uint16
	metric   Metric
	dims     int
	valueLen int
	meta     *Metadata
	version  Version

	upper sync.Map // uint64(id)<<8|layer -> []uint32: decoded links of the upper layers
	state sync.Pool
	// nodes, for a reader bound to a snapshot (but for codes, which hold their own), caches
	// where each item value lies in the memory map (valid as long as the snapshot's
	// transactions are open) and decoded layer-0 links, up to links0Limit bytes of them.
	nodes       *nodeCache
	links0Bytes atomic.Int64
	links0Limit int64

	// codes, in ReadCompressed mode, is the compressed copy of the index searches walk with.
	codes *codes
	plan  ReadPlan
}

// links0Budget bounds the memory a snapshot reader spends on decoded layer-0 links.
const links0Budget = 256 << 20

// ReadMode is how a snapshot reader reads the file.
type ReadMode int

// The read modes. ReadAuto chooses by the memory budget when the reader opens.
const (
	// ReadAuto: ReadMemory if the file fits in the budget, else ReadCompressed if the
	// metric allows it and the codes fit in three quarters of the budget, else ReadDisk.
	ReadAuto ReadMode = iota
	// ReadMemory: the file is expected to stay in memory; its pages are read ahead.
	ReadMemory
	// ReadCompressed: searches walk the graph with 8-bit codes held in memory and read exact
	// vectors only to re-rank their best candidates; each page is read only when needed.
	ReadCompressed
	// ReadDisk: exact distances from the file, each page read only when needed.
	ReadDisk
)

var readModeNames = [...]string{"auto", "memory", "compressed", "disk"}

// String is the mode's name: "auto", "memory", "compressed" or "disk".
func (m ReadMode) String() string {
	if m >= 0 && int(m) < len(readModeNames) {
		return readModeNames[m]
	}
	return fmt.Sprintf("ReadMode(%d)", int(m))
}

// ParseReadMode returns the mode named s (see ReadMode.String).
func ParseReadMode(s string) (ReadMode, error) {
	for i, n := range readModeNames {
		if s == n {
			return ReadMode(i), nil
		}
	}
	return 0, invalidf("read mode must be one of auto, memory, compressed, disk; got %q", s)
}

// chooseReadMode is ReadAuto's choice for a data file of fileBytes used bytes under budget,
// when codes of the index would cost codesCost bytes. Readers and builds choose alike.
func chooseReadMode(metric Metric, fileBytes, budget, codesCost int64) ReadMode {
	switch {
	case fileBytes <= budget:
		return ReadMemory
	case metric.quantizable() && codesCost <= budget/4*3:
		return ReadCompressed
	}
	return ReadDisk
}

// ReaderOptions configure a snapshot reader.
type ReaderOptions struct {
	// MemoryBudget is the memory, in bytes, the reader plans to use for the file's pages and
	// its tables (0: the environment's, see Options.MemoryBudget).
	MemoryBudget int64
	// Mode forces a read mode (ReadAuto: chosen from the budget).
	Mode ReadMode
}

// ReadPlan is what a snapshot reader decided when it opened, and why.
type ReadPlan struct {
	Mode         ReadMode
	Budget       int64  // bytes
	BudgetSource string // "explicit", "environment", "automatic" or "unlimited"
	FileBytes    int64  // the used part of the data file
	CodesBytes   int64  // memory held by codes (ReadCompressed)
}

// OpenSnapshotReader opens a reader like OpenReader, with a transaction of snap, and binds it
// to snap: it then remembers where item vectors lie in LMDB's memory map, which saves a B-tree
// lookup per distance. Use it only with snap's transactions, and not after snap is closed. It
// reads as ReaderOptions{} says: see OpenSnapshotReaderWith.
func OpenSnapshotReader(snap *Snapshot, db *Database, index uint16, metric Metric) (*Reader, error) {
	return OpenSnapshotReaderWith(snap, db, index, metric, ReaderOptions{})
}

// OpenSnapshotReaderWith opens a snapshot reader that reads as opts say. A file that fits in
// the memory budget has its pages read ahead in the background; one that does not is read a
// page at a time where needed, and for the float metrics the reader first scans the index's
// vectors once into codes held in memory (ReadCompressed, see ReadMode), which it keeps for its
// life.
func OpenSnapshotReaderWith(snap *Snapshot, db *Database, index uint16, metric Metric, opts ReaderOptions) (*Reader, error) {
	if opts.MemoryBudget < 0 {
		return nil, invalidf("memory budget must be positive, got %d", opts.MemoryBudget)
	}
	if opts.Mode < ReadAuto || opts.Mode > ReadDisk {
		return nil, invalidf("unknown read mode %d", int(opts.Mode))
	}
	txn, err := snap.Acquire()
	if err != nil {
		return nil, err
	}
	defer snap.Release(txn)
	r, err := OpenReader(txn, db, index, metric)
	if err != nil {
		return nil, err
	}
	n := r.meta.Items.GetCardinality()
	maxID := uint32(0)
	if n > 0 {
		maxID = r.meta.Items.Maximum()
	}
	env := db.env
	plan := ReadPlan{Mode: opts.Mode}
	plan.Budget, plan.BudgetSource = env.MemoryBudget(opts.MemoryBudget)
	if plan.FileBytes, err = env.UsedBytes(); err != nil {
		return nil, err
	}
	if plan.Mode == ReadAuto {
		plan.Mode = chooseReadMode(metric, plan.FileBytes, plan.Budget, codesBytes(n, r.dims, maxID))
	}
	if plan.Mode == ReadCompressed && !metric.quantizable() {
		plan.Mode = ReadDisk
	}
	if plan.Mode != ReadMemory {
		env.cool() // a file warmed while it fit
	}
	switch plan.Mode {
	case ReadMemory:
		env.warm(plan.FileBytes)
		r.nodes = newNodeCache(maxID, n)
		r.links0Limit = links0Budget
	case ReadCompressed:
		src := codeSource{db: db, index: index, metric: metric, dims: r.dims, items: r.meta.Items, used: plan.FileBytes, refs: true}
		// A second transaction on the snapshot, if one can be had without waiting, scans half.
		var second Txn
		if t := snap.grow(); t != nil {
			defer snap.Release(t)
			second = t
		}
		if r.codes, err = buildCodes(txn, second, src, plan.Budget); err != nil {
			return nil, err
		}
		// Layer-0 links are the next thing worth holding: each hop of a walk reads one list.
		// A quarter of the budget is left to the file's pages (B-tree branches, re-ranking)
		// and the runtime's own overhead.
		if err := r.codes.loadLinks(txn, src, plan.Budget-r.codes.bytes()-plan.Budget/4); err != nil {
			return nil, err
		}
		plan.CodesBytes = r.codes.bytes() // links that did not fit are read from the file
	default:
		r.nodes = newNodeCache(maxID, n)
		r.links0Limit = min(links0Budget, plan.Budget/4)
	}
	r.plan = plan
	return r, nil
}

// Plan is what a snapshot reader decided when it opened (the zero ReadPlan for a reader opened
// with OpenReader).
func (r *Reader) Plan() ReadPlan { return r.plan }

// OpenReader opens index of db for searching. It fails with ErrMissingMetadata if the index was
// never built, a *MetricError if it is stored with another metric, and ErrNeedBuild if it has
// changes not built yet.
func OpenReader(txn Txn, db *Database, index uint16, metric Metric) (*Reader, error) {
	meta, err := readMetadata(txn, db, index)
	if err != nil {
		return nil, err
	}
	if meta == nil {
		return nil, fmt.Errorf("%w on index %d, you must build your database before attempting to read it", ErrMissingMetadata, index)
	}
	if meta.Distance != metric.Name() {
		return nil, fmt.Errorf("index %d: %w", index, &MetricError{Stored: meta.Distance, Requested: metric.Name()})
	}
	pending := false
	err = scanPrefix(txn, db, ModePrefix(index, ModeUpdated), func(Key, []byte) (bool, error) {
		pending = true
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	if pending {
		return nil, fmt.Errorf("%w on index %d", ErrNeedBuild, index)
	}
	if meta.Dimensions == 0 || meta.Dimensions > 1<<24 {
		return nil, fmt.Errorf("index %d: %w", index, corruptf("metadata holds %d dimensions", meta.Dimensions))
	}
	version := Version{}
	if v, ok, err := get(txn, db, VersionKey(index)); err != nil {
		return nil, err
	} else if ok {
		if version, err = DecodeVersion(v); err != nil {
			return nil, fmt.Errorf("version of index %d: %w", index, corruptf("%v", err))
		}
	}
	r := &Reader{db: db, index: index, metric: metric, dims: int(meta.Dimensions),
		valueLen: metric.valueLen(int(meta.Dimensions)), meta: meta, version: version}
	maxID := uint32(0)
	if n := meta.Items.GetCardinality(); n > 0 {
		maxID = meta.Items.Maximum()
	}
	r.state.New = func() any { return &searchState{visited: newVisitedIDs(maxID, meta.Items.GetCardinality())} }
	if budget, err := strconv.ParseInt(os.Getenv("HANNOY_READER_PREFETCH_MEMORY"), 10, 64); err == nil && budget > 0 {
		r.prefetch(txn, budget)
	}
	return r, nil
}

// Index is the index number.
func (r *Reader) Index() uint16 { return r.index }

// Metric is the index's metric.
func (r *Reader) Metric() Metric { return r.metric }

// Dimensions is the vector length of the index.
func (r *Reader) Dimensions() int { return r.dims }

// Len is the number of items in the index.
func (r *Reader) Len() uint64 { return r.meta.Items.GetCardinality() }

// Contains reports whether item is in the index.
func (r *Reader) Contains(item uint32) bool { return r.meta.Items.Contains(item) }

// ItemIDs returns the items of the index. The bitmap is the reader's own: do not modify it.
func (r *Reader) ItemIDs() *roaring.Bitmap { return r.meta.Items }

// EntryPoints returns the graph's entry points (the items of its top layer).
func (r *Reader) EntryPoints() []uint32 { return append([]uint32(nil), r.meta.EntryPoints...) }

// MaxLevel is the graph's top layer.
func (r *Reader) MaxLevel() int { return int(r.meta.MaxLevel) }

// Version is the hannoy format version that wrote the index (0.0.0 if none is stored).
func (r *Reader) Version() Version { return r.version }

// ItemVector returns the stored vector of item, or false if it is not in the index.
func (r *Reader) ItemVector(txn Txn, item uint32) ([]float32, bool, error) {
	if !r.meta.Items.Contains(item) {
		return nil, false, nil
	}
	return itemVector(txn, r.db, r.index, r.metric, r.dims, item)
}

// vector returns the value of item (tag, header and vector), or nil if it has none.
func (r *Reader) vector(txn Txn, st *searchState, item uint32) ([]byte, error) {
	if r.codes != nil {
		if s := r.codes.slot(item); s >= 0 {
			return refBytes(r.codes.refs[s], r.valueLen), nil
		}
		return nil, nil
	}
	if r.nodes != nil {
		if e := r.nodes.get(item); e != nil {
			if p := e.vec.Load(); p != nil {
				if p == &absentVector {
					return nil, nil
				}
				return refBytes(p, r.valueLen), nil
			}
		}
	}
	v, ok, err := r.get(txn, st, ItemKey(r.index, item))
	if err != nil {
		return nil, err
	}
	if !ok {
		if e := r.nodes.entry(item); e != nil {
			e.vec.Store(&absentVector)
		}
		return nil, nil
	}
	if len(v) != r.valueLen {
		return nil, fmt.Errorf("item %d of index %d: %w", item, r.index, corruptf("value of %d bytes, expected %d", len(v), r.valueLen))
	}
	if v[0] != TagItem {
		return nil, fmt.Errorf("item %d of index %d: %w", item, r.index, corruptf("tag %d is not an item's", v[0]))
	}
	if e := r.nodes.entry(item); e != nil {
		e.vec.Store(&v[0])
	}
	return v, nil
}

// neighbours returns the links of item on layer, to be read and not kept: a cached list, or
// the list decoded into st.ids. Upper layers are decoded once and cached; layer 0 is cached up
// to links0Limit bytes, or preloaded by codes.
func (r *Reader) neighbours(txn Txn, st *searchState, item uint32, layer int) ([]uint32, error) {
	ck := uint64(item)<<8 | uint64(layer)
	if layer > 0 {
		if c, ok := r.upper.Load(ck); ok {
			return c.([]uint32), nil
		}
	} else if r.nodes != nil {
		if e := r.nodes.get(item); e != nil {
			if p := e.links.Load(); p != nil {
				return unpackLinks(p), nil
			}
		}
	} else if r.codes != nil {
		if ids, ok := r.codes.links(r.codes.slot(item), st.ids[:0]); ok {
			st.ids = ids
			return ids, nil
		}
	}
	v, ok, err := r.get(txn, st, LinksKey(r.index, item, uint8(layer)))
	if err != nil || !ok {
		return nil, err
	}
	ids, err := DecodeLinksValue(v, st.ids[:0])
	if err != nil {
		return nil, fmt.Errorf("links of item %d on layer %d of index %d: %w", item, layer, r.index, corruptf("%v", err))
	}
	st.ids = ids
	if layer > 0 {
		r.upper.Store(ck, append([]uint32(nil), ids...))
	} else if r.nodes != nil && r.links0Bytes.Load() < r.links0Limit {
		if e := r.nodes.entry(item); e != nil {
			if p := packLinks(ids); e.links.CompareAndSwap(nil, p) {
				r.links0Bytes.Add(int64(4*len(ids) + 16))
			}
		}
	}
	return ids, nil
}

// packLinks copies a neighbour list into one allocation, its length then its ids, so that a
// cache entry is one pointer away from the ids.
func packLinks(ids []uint32) *uint32 {
	p := make([]uint32, 1+len(ids))
	p[0] = uint32(len(ids))
	copy(p[1:], ids)
	return &p[0]
}

// unpackLinks returns the ids of a list made by packLinks.
func unpackLinks(p *uint32) []uint32 {
	n := *p
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*uint32)(unsafe.Add(unsafe.Pointer(p), 4)), n)
}

// cachedVector returns the value of item if the reader has it cached in a dense table, else nil
// (also for an item known to have no vector): the hot path of vector, small enough to be
// inlined.
func (r *Reader) cachedVector(item uint32) []byte {
	if c := r.nodes; c != nil && int(item) < len(c.dense) {
		if p := c.dense[item].vec.Load(); p != nil && p != &absentVector {
			return refBytes(p, r.valueLen)
		}
	}
	return nil
}

// prefetchLinks starts loading the cached layer-0 links of item into the CPU cache, if the
// reader has them, for a candidate that a search is likely to expand soon.
func (r *Reader) prefetchLinks(item uint32) {
	if c := r.nodes; c != nil && int(item) < len(c.dense) {
		if p := c.dense[item].links.Load(); p != nil {
			vecmath.Prefetch(unsafe.Slice((*byte)(unsafe.Pointer(p)), 4))
		}
	}
}

// nodeRefs is what a snapshot reader caches of one item: where its value lies in the memory map
// (absentVector if it has none) and its decoded layer-0 links (see packLinks). They sit side by
// side: a search that has just read the vector of a new candidate finds where the candidate's
// links are in the same cache line.
type nodeRefs struct {
	vec   atomic.Pointer[vectorRef]
	links atomic.Pointer[uint32]
}

// nodeCache maps item ids to their nodeRefs: a flat array when ids are dense enough, else a
// sharded map whose entries are made on first use. It is safe for concurrent use.
type nodeCache struct {
	dense  []nodeRefs
	sparse *table[nodeRefs]
}

// newNodeCache sizes a cache for ids up to maxID among n items.
func newNodeCache(maxID uint32, n uint64) *nodeCache {
	if denseIDs(maxID, n) {
		return &nodeCache{dense: make([]nodeRefs, uint64(maxID)+1)}
	}
	return &nodeCache{sparse: newTable[nodeRefs](maxID, n)}
}

// get returns the entry of id, or nil if there is none yet.
func (c *nodeCache) get(id uint32) *nodeRefs {
	if int(id) < len(c.dense) {
		return &c.dense[id]
	}
	if c.sparse != nil {
		return c.sparse.get(id)
	}
	return nil
}

// entry returns the entry of id, making it if needed; nil if c is nil or id is beyond a dense
// cache.
func (c *nodeCache) entry(id uint32) *nodeRefs {
	if c == nil {
		return nil
	}
	if c.sparse == nil {
		if int(id) < len(c.dense) {
			return &c.dense[id]
		}
		return nil
	}
	if e := c.sparse.get(id); e != nil {
		return e
	}
	return c.sparse.getOrPut(id, new(nodeRefs))
}

// get reads one value like the package's get, with the key in st: a key passed to LMDB
// escapes to the heap, and st is there already, so a lookup allocates nothing.
func (r *Reader) get(txn Txn, st *searchState, key Key) (val []byte, ok bool, err error) {
	v, err := txn.lmdbTxn().Get(r.db.dbi, key.Append(st.key[:0]))
	if err != nil {
		if lmdb.IsNotFound(err) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("read %v: %w", key, err)
	}
	return v, true, nil
}
