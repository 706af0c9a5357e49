// This file holds the orchestration of a build: its options and progress reporting, Writer.Build,
// the builder, and the steps that collect the updates, prepare the sources and write the metadata.

package core

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/RoaringBitmap/roaring/v2"
)

// BuildOptions are the parameters of Build. The zero value of a field means its default.
type BuildOptions struct {
	// M is the maximum number of links per item on layers above 0 (default 16, at least 2).
	M int
	// M0 is the maximum number of links per item on layer 0 (default 2·M, at least M).
	M0 int
	// EfConstruction is the size of the candidate list while linking an item (default 96).
	EfConstruction int
	// Alpha relaxes the neighbour-selection heuristic: a candidate c is dropped when a selected
	// neighbour s has alpha·d(c, s) < d(c, q) (default 1.0).
	Alpha float32
	// Seed fixes level assignment (default DefaultSeed). With Threads = 1 a build is then
	// reproducible bit for bit.
	Seed uint64
	// Threads is the number of goroutines that insert items (default: GOMAXPROCS).
	Threads int
	// Progress, if not nil, is updated while the build runs; poll it from another goroutine.
	Progress *Progress
	// MemoryBudget is the memory, in bytes, the build plans to use for reading the index (0:
	// the environment's, see Options.MemoryBudget).
	MemoryBudget int64
	// ReadMode says how the build reads the items already in the index. ReadAuto: if the
	// data file does not fit in the memory budget and the metric is a float one, the build
	// first scans them into 8-bit codes in memory (see ReadCompressed) and computes every
	// distance to them from the codes, so that inserting reads no vector page at random; the
	// items it inserts are always exact. ReadCompressed forces codes; ReadMemory and ReadDisk
	// read exact vectors.
	ReadMode ReadMode

	// insertBatch, for tests, sets the batches of an insertion through codes with every
	// layer-0 list preloaded (0: planned from the budget; see builder.insertBatch).
	insertBatch int
	// linksLimit, for tests, sets the bytes planned for preloaded links (0: planned).
	linksLimit int64
}

func (o *BuildOptions) normalize() error {
	if o.M == 0 {
		o.M = 16
	}
	if o.M < 2 || o.M > 1<<16 {
		return invalidf("m must be between 2 and 65536, got %d", o.M)
	}
	if o.M0 == 0 {
		o.M0 = 2 * o.M
	}
	if o.M0 < o.M || o.M0 > 1<<17 {
		return invalidf("m0 must be between m (%d) and 131072, got %d", o.M, o.M0)
	}
	if o.EfConstruction == 0 {
		o.EfConstruction = 96
	}
	if o.EfConstruction < 1 {
		return invalidf("ef_construction must be at least 1, got %d", o.EfConstruction)
	}
	if o.Alpha == 0 {
		o.Alpha = 1
	}
	if !(o.Alpha >= 1 && o.Alpha <= 100) {
		return invalidf("alpha must be between 1 and 100, got %v", o.Alpha)
	}
	if o.Seed == 0 {
		o.Seed = DefaultSeed
	}
	if o.Threads <= 0 {
		o.Threads = runtime.GOMAXPROCS(0)
	}
	if o.MemoryBudget < 0 {
		return invalidf("memory budget must be positive, got %d", o.MemoryBudget)
	}
	if o.ReadMode < ReadAuto || o.ReadMode > ReadDisk {
		return invalidf("unknown read mode %d", int(o.ReadMode))
	}
	return nil
}

// Phase is a step of a build, reported by Progress.
type Phase int32

// The phases of a build, in order.
const (
	PhaseIdle Phase = iota
	PhaseRetrievingUpdates
	PhaseRepairingDeletions
	PhaseInserting
	PhaseWritingLinks
	PhaseWritingMetadata
	PhaseDone
)

var phaseNames = [...]string{"idle", "retrieving updated items", "repairing deleted links",
	"inserting items", "writing links", "writing metadata", "done"}

func (p Phase) String() string {
	if p < 0 || int(p) >= len(phaseNames) {
		return fmt.Sprintf("phase(%d)", int32(p))
	}
	return phaseNames[p]
}

// Progress reports how far a build is. Its methods are safe for concurrent use.
type Progress struct {
	phase       atomic.Int32
	done, total atomic.Uint64
	codes       atomic.Bool
	flushes     atomic.Int64 // lists moved into preloaded links between batches (flushLists)
	linkSlots   atomic.Int64 // items of the last commit whose layer-0 links were preloaded
}

// Compressed reports whether the build read the index's committed items through codes (see
// BuildOptions.ReadMode); it is set once the build has decided.
func (p *Progress) Compressed() bool { return p != nil && p.codes.Load() }

// Get returns the current phase and how many of its steps are done. PhaseDone counts the
// items the build inserted or deleted, all done.
func (p *Progress) Get() (phase Phase, done, total uint64) {
	return Phase(p.phase.Load()), p.done.Load(), p.total.Load()
}

func (p *Progress) set(phase Phase, total uint64) {
	if p == nil {
		return
	}
	p.done.Store(0)
	p.total.Store(total)
	p.phase.Store(int32(phase))
}

// finish sets PhaseDone with n of n steps: the items the build inserted or deleted.
func (p *Progress) finish(n uint64) {
	if p == nil {
		return
	}
	p.done.Store(n)
	p.total.Store(n)
	p.phase.Store(int32(PhaseDone))
}

func (p *Progress) add(n uint64) {
	if p != nil {
		p.done.Add(n)
	}
}

// Build links every item added, overwritten or deleted since the last build into the graph and
// writes the metadata. Its cost is proportional to what changed: only the links of items that
// change are rewritten. Items are inserted on opts.Threads goroutines that read the last commit
// through their own read transactions, while txn is only used from the calling goroutine, which
// must be the one that began it.
//
// When ctx is cancelled the build stops with an error wrapping ErrCancelled. After any error
// the transaction holds a partial build and must be aborted.
func (w *Writer) Build(ctx context.Context, txn *WriteTxn, opts BuildOptions) error {
	if err := opts.normalize(); err != nil {
		return err
	}
	b := &builder{w: w, txn: txn, opts: opts, metric: w.metric, ctx: ctx,
		valueLen: w.metric.valueLen(w.dims), drawer: newLevelDrawer(opts.Seed, opts.M)}
	// When the file is not small beside the budget, the Go heap is held to the budget.
	budget, _ := w.db.env.MemoryBudget(opts.MemoryBudget)
	if used, err := w.db.env.UsedBytes(); err == nil && used > budget/4 {
		b.heap = capGoHeap(budget)
	}
	err := b.run()
	b.closeReaders()
	b.heap.restore()
	if b.readMode == ReadCompressed || b.readMode == ReadDisk {
		// A build that read through codes or the disk ran short of memory: hand its graph and
		// codes back to the system now rather than when the scavenger gets to them (the commit
		// and the readers that follow want that memory).
		b.codes = nil
		debug.FreeOSMemory()
	}
	if err != nil {
		if ctx.Err() != nil && !errors.Is(err, ErrCancelled) {
			err = fmt.Errorf("%w: %v", ErrCancelled, err)
		}
		return fmt.Errorf("build index %d: %w", w.index, err)
	}
	return nil
}

type builder struct {
	w        *Writer
	txn      *WriteTxn
	opts     BuildOptions
	metric   Metric
	ctx      context.Context
	valueLen int
	drawer   levelDrawer

	// What changed.
	meta       *Metadata
	items      *roaring.Bitmap // the items of the index after this build
	toInsert   []uint32        // added or overwritten, ascending
	toDelete   *roaring.Bitmap // deleted items that were indexed
	oldLevels  map[uint32]int  // level on disk of overwritten items
	levels     map[uint32]int  // drawn level of each item to insert
	anyChanges bool

	// Reading the base graph: the last commit through read transactions, or this transaction's
	// state preloaded when an earlier Build or Clear in it changed the graph.
	preloaded bool
	preLinks  map[uint64][]uint32
	vecs      *table[vectorRef]
	// codes, when the index does not fit in memory, stand for the vectors of the last commit's
	// items (those vecs does not hold: this build's own are exact).
	codes     *codes
	nodes     *table[node]
	readersMu sync.Mutex
	readers   []*ReadTxn

	// The graph's top.
	epMu     sync.Mutex
	eps      []uint32
	maxLevel int // -1 while the graph is empty

	// Items pruned out of a list during this build (key id<<8 | layer).
	droppedMu sync.Mutex
	dropped   map[uint64]bool
	relinking bool // set once insertion is over: every drop counts

	// With codes whose layer-0 links are preloaded, insertion goes in batches of insertBatch
	// items (0: all at once); between batches, the lists of existing items it changed move
	// from the node table into the preloaded links, packed, and flushed records which items
	// those are (see flushLists). The memory the build holds then grows with the batch rather
	// than with the chunk.
	insertBatch int
	flushed     *roaring.Bitmap
	// newLists holds the layer-0 lists of new items (slot: the item's index in toInsert)
	// that flushLists moved out of the table, newMoved which items those are.
	newLists *packedLists
	newMoved *roaring.Bitmap

	// heap holds the Go heap to the memory budget while the build runs (nil: not capped).
	heap *goHeapCap
	// readMode is how the last commit's vectors are read (ReadAuto before it is decided).
	readMode ReadMode

	failed  atomic.Bool
	errOnce sync.Once
	err     error
}

func (b *builder) fail(err error) {
	b.errOnce.Do(func() { b.err = err })
	b.failed.Store(true)
}

func (b *builder) cancelled() error {
	if err := b.ctx.Err(); err != nil {
		return fmt.Errorf("%w: %v", ErrCancelled, err)
	}
	return nil
}

func (b *builder) run() error {
	p := b.opts.Progress
	if p != nil {
		p.codes.Store(false)
	}
	p.set(PhaseRetrievingUpdates, 0)
	if err := b.collectUpdates(); err != nil {
		return err
	}
	if !b.anyChanges && b.meta != nil {
		p.finish(0)
		return nil
	}
	if err := b.cancelled(); err != nil {
		return err
	}
	if err := b.prepareSources(); err != nil {
		return err
	}
	if !b.toDelete.IsEmpty() {
		p.set(PhaseRepairingDeletions, b.toDelete.GetCardinality())
		if err := b.repairDeletions(); err != nil {
			return err
		}
	}
	p.set(PhaseInserting, uint64(len(b.toInsert)))
	if err := b.insertAll(); err != nil {
		return err
	}
	if err := b.fixOrphans(); err != nil {
		return err
	}
	if !b.toDelete.IsEmpty() || b.meta == nil || b.meta.Items.IsEmpty() {
		// A first build holds the whole graph in memory, and deletions already cost a scan of
		// every link: walk layer 0 from the top and link in whatever it does not reach.
		if err := b.ensureReachable(); err != nil {
			return err
		}
	}
	b.closeReaders() // vector pointers of the base are not used past this point
	if err := b.writeLinks(); err != nil {
		return err
	}
	p.set(PhaseWritingMetadata, 1)
	if err := b.writeMetadata(); err != nil {
		return err
	}
	b.txn.markRebuilt(b.w.db, b.w.index)
	p.add(1)
	p.finish(uint64(len(b.toInsert)) + b.toDelete.GetCardinality())
	return nil
}

// collectUpdates reads and deletes the update markers and works out what to insert and delete.
func (b *builder) collectUpdates() error {
	w := b.w
	meta, err := readMetadata(b.txn, w.db, w.index)
	if err != nil {
		return err
	}
	b.meta = meta
	var updated, removed []uint32
	err = w.scan(b.txn, ModeUpdated, func(k Key, v []byte) (bool, error) {
		st, err := DecodeUpdateStatus(v)
		if err != nil {
			return false, fmt.Errorf("update marker of item %d: %w", k.Item, corruptf("%v", err))
		}
		if st == StatusRemoved {
			removed = append(removed, k.Item)
		} else {
			updated = append(updated, k.Item)
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	b.anyChanges = len(updated)+len(removed) > 0
	if err := deletePrefix(b.txn, w.db, ModePrefix(w.index, ModeUpdated)); err != nil {
		return fmt.Errorf("delete update markers: %w", err)
	}
	old := roaring.New()
	if meta != nil {
		old = meta.Items
		b.maxLevel = int(meta.MaxLevel)
		b.eps = slices.Clone(meta.EntryPoints)
	}
	removedBM := roaring.BitmapOf(removed...)
	b.toDelete = roaring.And(removedBM, old)
	b.items = roaring.Or(old, roaring.BitmapOf(updated...))
	b.items.AndNot(removedBM)
	// An item marked updated whose vector is gone (added then deleted) is not inserted.
	for _, id := range updated {
		if _, ok, err := get(b.txn, w.db, ItemKey(w.index, id)); err != nil {
			return err
		} else if ok {
			b.toInsert = append(b.toInsert, id)
		} else if old.Contains(id) {
			b.toDelete.Add(id)
			b.items.Remove(id)
		} else {
			b.items.Remove(id)
		}
	}
	return nil
}

// prepareSources sets up the vector and node tables and the levels. It is the last step that
// reads through the write transaction before the links are written: the vector pointers it
// takes stay valid because nothing is written in between.
func (b *builder) prepareSources() error {
	w := b.w
	maxID := uint32(0)
	if !b.items.IsEmpty() {
		maxID = b.items.Maximum()
	}
	if !b.toDelete.IsEmpty() {
		maxID = max(maxID, b.toDelete.Maximum())
	}
	b.vecs = newTable[vectorRef](maxID, b.items.GetCardinality()+b.toDelete.GetCardinality())
	b.nodes = newTable[node](maxID, b.items.GetCardinality()+b.toDelete.GetCardinality())
	b.preloaded = b.txn.wasRebuilt(w.db, w.index)

	readVec := func(id uint32, v []byte) error {
		if len(v) != b.valueLen {
			return fmt.Errorf("item %d: %w", id, corruptf("value of %d bytes, expected %d for %s with %d dimensions",
				len(v), b.valueLen, b.metric, w.dims))
		}
		if _, _, err := DecodeItemValue(v, b.metric.headerSize(), b.metric.wordSize()); err != nil {
			return fmt.Errorf("item %d: %w", id, corruptf("%v", err))
		}
		b.vecs.put(id, &v[0])
		return nil
	}
	if b.preloaded {
		b.preLinks = map[uint64][]uint32{}
		err := w.scan(b.txn, ModeItem, func(k Key, v []byte) (bool, error) {
			return true, readVec(k.Item, v)
		})
		if err != nil {
			return err
		}
		err = w.scan(b.txn, ModeLinks, func(k Key, v []byte) (bool, error) {
			ids, err := DecodeLinksValue(v, nil)
			if err != nil {
				return false, fmt.Errorf("links of item %d layer %d: %w", k.Item, k.Layer, corruptf("%v", err))
			}
			b.preLinks[uint64(k.Item)<<8|uint64(k.Layer)] = ids
			return true, nil
		})
		if err != nil {
			return err
		}
	} else {
		for _, id := range b.toInsert {
			v, _, err := get(b.txn, w.db, ItemKey(w.index, id))
			if err != nil {
				return err
			}
			if err := readVec(id, v); err != nil {
				return err
			}
		}
		if err := b.prepareCodes(); err != nil {
			return err
		}
	}
	for it := b.toDelete.Iterator(); it.HasNext(); {
		b.vecs.put(it.Next(), &absentVector)
	}

	// Levels: an overwritten item keeps at least its level on disk, so that no upper-layer link
	// to it is left dangling.
	b.levels = make(map[uint32]int, len(b.toInsert))
	b.oldLevels = map[uint32]int{}
	var prevMeta *roaring.Bitmap
	if b.meta != nil {
		prevMeta = b.meta.Items
	}
	for _, id := range b.toInsert {
		lvl := b.drawer.level(id)
		if prevMeta != nil && prevMeta.Contains(id) {
			old, err := b.diskLevel(id)
			if err != nil {
				return err
			}
			b.oldLevels[id] = old
			lvl = max(lvl, old)
		} else {
			b.nodes.put(id, &node{fresh: true})
		}
		b.levels[id] = lvl
	}
	if b.meta == nil || b.meta.Items.IsEmpty() {
		b.maxLevel = -1
		b.eps = nil
	}
	return nil
}

// prepareCodes decides, as a reader would, whether the last commit's items are read through
// codes, and makes them (with their layer-0 links, while they fit) if so; a file read in place
// is read ahead instead.
func (b *builder) prepareCodes() error {
	if b.meta == nil || b.meta.Items.IsEmpty() || !b.metric.quantizable() {
		return nil
	}
	env := b.w.db.env
	budget, _ := env.MemoryBudget(b.opts.MemoryBudget)
	used, err := env.UsedBytes()
	if err != nil {
		return err
	}
	mode := b.opts.ReadMode
	if mode == ReadAuto {
		mode = buildReadMode(b.metric, used, budget, int64(len(b.toInsert)),
			codesBytes(b.meta.Items.GetCardinality(), b.w.dims, b.meta.Items.Maximum()))
	}
	b.readMode = mode
	if mode == ReadMemory {
		// The build reads the graph at random: from a cold page cache, a page a fault (the
		// file is opened MDB_NORDAHEAD) unless the file is read ahead as a reader's is.
		env.warm(used)
		return nil
	}
	env.cool()
	if mode != ReadCompressed {
		return nil
	}
	txn, err := b.parentSnapshot()
	if err != nil {
		return err
	}
	src := codeSource{db: b.w.db, index: b.w.index, metric: b.metric, dims: b.w.dims, items: b.meta.Items, used: used}
	var second Txn
	if t, err := b.parentSnapshot(); err == nil {
		second = t // closed with the build's other readers
	}
	if b.codes, err = buildCodes(txn, second, src, budget); err != nil {
		return err
	}
	if p := b.opts.Progress; p != nil {
		p.codes.Store(true)
	}
	// Links too. Planned as before batches (below), with half of what is left of the budget
	// once the build's own memory and the codes are set aside, but never so much that less
	// than buildCacheFloor is left: the rest is the page cache the build reads links and
	// vectors through, and the margin the collector and the interpreter need. (Planning all of
	// it for links got GloVe's chunked build under a quarter of its file + 48 MiB killed by the
	// limit; taking the codes out of half the budget instead, as before, left no links at all
	// whenever the codes were more than a third of it: adding 25,000 items to 300,000 256-d
	// ones under that limit then read 54,000 pages at random, against 14,000 with every layer-0
	// list preloaded.)
	inserts := int64(len(b.toInsert))
	reserve := inserts * buildBytesPerInsert
	links := buildLinksBudget(budget, reserve, b.codes.bytes())
	// Unless most layer-0 lists fit beside the codes when the build's memory is that of its
	// smallest batch: then they are preloaded, and insertion goes in batches.
	batched := inserts > minInsertBatch
	if batched {
		links = max(links, budget-batchReserve(inserts, minInsertBatch)-b.codes.bytes()-buildCacheFloor)
	}
	if b.opts.linksLimit > 0 {
		links = b.opts.linksLimit
	}
	if err := b.codes.loadLinks(txn, src, links); err != nil {
		return err
	}
	if p := b.opts.Progress; p != nil {
		p.linkSlots.Store(int64(b.codes.linksLoaded))
	}
	loaded := func() float64 { return float64(b.codes.linksLoaded) / float64(max(len(b.codes.aux), 1)) }
	if b.opts.insertBatch > 0 {
		b.insertBatch = b.opts.insertBatch
	} else if batched && loaded() >= minBatchedLinks {
		// The lists of items whose links were not preloaded stay in the table to the end.
		stay := int64((1 - loaded()) * float64(inserts*batchBytesPerInsert))
		if stay > 0 {
			b.codes.trimLinks(b.codes.linksBytes() - stay)
		}
		left := budget - b.codes.bytes() - buildCacheFloor - inserts*movedNewBytes - stay
		if batch := min(max(left/batchBytesPerInsert, minInsertBatch), maxInsertBatch); batch < inserts && loaded() >= minBatchedLinks {
			b.insertBatch = int(batch)
			reserve = batchReserve(inserts, batch) + stay
		}
	}
	if batched && b.insertBatch == 0 {
		before := b.codes.linksBytes()
		b.codes.trimLinks(buildLinksBudget(budget, reserve, b.codes.bytes()-before))
		if b.codes.linksBytes() < before {
			debug.FreeOSMemory() // the lists dropped, before the graph needs the memory
		}
	}
	// What the Go heap needs from here on is known: the codes, the links and the graph. Holding
	// it to that (with a margin for the collector) leaves the rest to the page cache.
	if b.insertBatch > 0 {
		// In batches the graph's memory is planned closely: the margin is the tables by id
		// and a little room for garbage. (With the margin below, the Go runtime held 18 MiB
		// above its live objects through GloVe-50's chunks under the limit, out of the page
		// cache: the chunks that faulted most took 6-8x their time in memory.)
		tables := 16*int64(b.vecs.size()) + 64*inserts
		b.heap.lower(b.codes.bytes() + reserve + tables + 8<<20)
		return nil
	}
	b.heap.lower(b.codes.bytes() + reserve + reserve/2 + 16<<20)
	return nil
}

// Insertion in batches (see builder.insertBatch): the node table holds the lists one batch
// changes, of new and existing items (batchBytesPerInsert an insertion; measured on GloVe-50:
// 46 MiB for 33,250 insertions into 365,750 items, 204,000 lists, about 236 bytes a list), and
// the lists of the batches before, moved out of the table and packed, take movedNewBytes per
// new item (its packed list and its offset; items with upper layers stay in the table). A batch
// is never smaller than minInsertBatch: each flush rewrites every segment of the packed lists
// it touches.
const (
	movedNewBytes       = 96
	batchBytesPerInsert = 1536
	minInsertBatch      = 2048
	maxInsertBatch      = 4096
	// minBatchedLinks is the least part of the lists preloaded for batches: below it the
	// build keeps its memory for the page cache, planned as before batches.
	minBatchedLinks = 0.5
)

// batchReserve is the memory a build inserting inserts items in batches of batch sets aside.
func batchReserve(inserts, batch int64) int64 {
	return inserts*movedNewBytes + min(batch, inserts)*batchBytesPerInsert
}

// buildCacheFloor is the least page cache a build reading through codes leaves itself when it
// plans preloaded links: B-tree branch pages, upper layers, the vectors being inserted and the
// pages the write-back changes. Under GloVe's limit (116 MiB for a 271 MiB file) what is left
// beside the codes and the build's own memory is about 8-14 MiB; with half of it given to
// links, one chunk of 33,250 words did not finish in 600 s (one run, Go probe; the run without
// links was stopped before it ended, so the two were not compared) and the 12-chunk build did
// not finish in 1,800 s beside a CI run. With the floor, GloVe's builds plan no links, as
// before that rule.
const buildCacheFloor = 16 << 20

// buildLinksBudget is what a build reading through codes plans for preloaded links (at most;
// negative: none), from its budget, its own memory and the codes' (see prepareCodes).
func buildLinksBudget(budget, reserve, codes int64) int64 {
	left := budget - reserve - codes
	return min(max(left, 0)/2, left-buildCacheFloor)
}

// buildBytesPerInsert is the memory a build sets aside per item it inserts before it plans its
// reads: the lists of the items it touches (about four per insertion), the item's own lists and
// the pages the write-back dirties (measured: about 700 bytes).
const buildBytesPerInsert = 1 << 10

// buildReadMode is chooseReadMode for a build: the file is read in place when it fits in what
// the build leaves of the budget, and otherwise through codes whenever they fit in the budget
// at all. A reader falls back to exact vectors page by page sooner: a search touches a few
// hundred pages, but a build walking exact vectors through too small a page cache reads
// without end.
func buildReadMode(metric Metric, fileBytes, budget, inserts, codesCost int64) ReadMode {
	switch {
	case fileBytes <= budget-inserts*buildBytesPerInsert:
		return ReadMemory
	case metric.quantizable() && codesCost <= budget:
		return ReadCompressed
	}
	return ReadDisk
}

// parentSnapshot opens a read transaction on the commit this write transaction started from,
// closed with the build's other readers.
func (b *builder) parentSnapshot() (*ReadTxn, error) {
	txn, err := b.w.db.env.BeginRead()
	if err != nil {
		return nil, err
	}
	if txn.ID() != b.txn.txn.ID()-1 {
		txn.Abort()
		return nil, fmt.Errorf("internal error: read snapshot %d is not the parent of write transaction %d", txn.ID(), b.txn.txn.ID())
	}
	b.readersMu.Lock()
	b.readers = append(b.readers, txn)
	b.readersMu.Unlock()
	return txn, nil
}

// diskLevel is the highest layer with links of item in the write transaction (-1 if none).
func (b *builder) diskLevel(id uint32) (int, error) {
	level := -1
	prefix := ModePrefix(b.w.index, ModeLinks)
	var ib [4]byte
	ib[0], ib[1], ib[2], ib[3] = byte(id>>24), byte(id>>16), byte(id>>8), byte(id)
	prefix = append(prefix, ib[:]...)
	err := scanPrefix(b.txn, b.w.db, prefix, func(k Key, _ []byte) (bool, error) {
		level = max(level, int(k.Layer))
		return true, nil
	})
	return level, err
}

func (b *builder) closeReaders() {
	b.readersMu.Lock()
	defer b.readersMu.Unlock()
	for _, r := range b.readers {
		r.Abort()
	}
	b.readers = nil
}

func (b *builder) writeMetadata() error {
	eps, top := b.topEntryPoints()
	if top < 0 {
		eps, top = nil, 0
	}
	slices.Sort(eps)
	meta := &Metadata{
		Distance:    b.metric.Name(),
		Dimensions:  uint32(b.w.dims),
		Items:       b.items,
		EntryPoints: slices.Compact(eps),
		MaxLevel:    uint8(top),
	}
	val, err := meta.Append(nil)
	if err != nil {
		return err
	}
	dbi := b.w.db.dbi
	if err := b.txn.put(dbi, MetadataKey(b.w.index).Bytes(), val); err != nil {
		return fmt.Errorf("write metadata: %w", err)
	}
	if err := b.txn.put(dbi, VersionKey(b.w.index).Bytes(), FormatVersion.Append(nil)); err != nil {
		return fmt.Errorf("write version: %w", err)
	}
	return nil
}

// Validate checks the options without changing them.
func (o BuildOptions) Validate() error { return o.normalize() }
