package core

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/RoaringBitmap/roaring/v2"

	"github.com/hannoy-go/hannoy/core/internal/vecmath"
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
}

// Get returns the current phase and how many of its steps are done.
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
	err := b.run()
	b.closeReaders()
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
	p.set(PhaseRetrievingUpdates, 0)
	if err := b.collectUpdates(); err != nil {
		return err
	}
	if !b.anyChanges && b.meta != nil {
		p.set(PhaseDone, 0)
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
	p.set(PhaseDone, 0)
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

// worker holds what one goroutine needs: its read transaction and search scratch space.
type worker struct {
	b       *builder
	txn     *ReadTxn
	visited *visitedSet
	cand    minHeap
	res     maxHeap
	ids     []uint32
	sel     []scored
	scratch []scored
	pend    []pendingVector
}

func (b *builder) newWorker() (*worker, error) {
	wk := &worker{b: b, visited: newVisitedSet(1024)}
	if !b.preloaded {
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
		wk.txn = txn
	}
	return wk, nil
}

// vector returns the value of item id, or nil if it has none (deleted).
func (wk *worker) vector(id uint32) ([]byte, error) {
	b := wk.b
	if !b.vecs.inRange(id) {
		return nil, nil // a link to an id beyond every item: treated as deleted
	}
	if p := b.vecs.get(id); p != nil {
		if p == &absentVector {
			return nil, nil
		}
		return refBytes(p, b.valueLen), nil
	}
	if b.preloaded {
		return nil, nil
	}
	v, ok, err := get(wk.txn, b.w.db, ItemKey(b.w.index, id))
	if err != nil {
		return nil, err
	}
	if !ok {
		b.vecs.put(id, &absentVector)
		return nil, nil
	}
	if len(v) != b.valueLen {
		return nil, fmt.Errorf("item %d: %w", id, corruptf("value of %d bytes, expected %d", len(v), b.valueLen))
	}
	if v[0] != TagItem {
		return nil, fmt.Errorf("item %d: %w", id, corruptf("tag %d is not an item's", v[0]))
	}
	b.vecs.put(id, &v[0])
	return v, nil
}

// diskLinks appends the links of id on layer as stored in the base graph.
func (wk *worker) diskLinks(id uint32, layer int, dst []uint32) ([]uint32, error) {
	b := wk.b
	if b.preloaded {
		return append(dst, b.preLinks[uint64(id)<<8|uint64(layer)]...), nil
	}
	if layer > 255 {
		return dst, nil
	}
	v, ok, err := get(wk.txn, b.w.db, LinksKey(b.w.index, id, uint8(layer)))
	if err != nil || !ok {
		return dst, err
	}
	dst, err = DecodeLinksValue(v, dst)
	if err != nil {
		return dst, fmt.Errorf("links of item %d on layer %d: %w", id, layer, corruptf("%v", err))
	}
	return dst, nil
}

// neighbours appends the current links of id on layer: the in-memory list if the build changed
// it, the base graph's otherwise.
func (wk *worker) neighbours(id uint32, layer int, dst []uint32) ([]uint32, error) {
	if n := wk.b.nodes.get(id); n != nil {
		n.mu.Lock()
		if layer < len(n.layers) && n.layers[layer].loaded {
			for _, s := range n.layers[layer].links {
				dst = append(dst, s.id)
			}
			n.mu.Unlock()
			return dst, nil
		}
		fresh := n.fresh
		n.mu.Unlock()
		if fresh {
			return dst, nil
		}
	}
	return wk.diskLinks(id, layer, dst)
}

func (wk *worker) dist(a, b []byte) float32 { return wk.b.metric.distance(a, b) }

// distIDs is the distance between two stored items; ok is false if either has no vector.
func (wk *worker) distIDs(a, b uint32) (float32, bool, error) {
	va, err := wk.vector(a)
	if err != nil || va == nil {
		return 0, false, err
	}
	vb, err := wk.vector(b)
	if err != nil || vb == nil {
		return 0, false, err
	}
	return wk.dist(va, vb), true, nil
}

// searchLayer is HNSW's beam search on one layer from eps, returning up to ef closest items
// ascending. self is never returned.
func (wk *worker) searchLayer(qv []byte, self uint32, eps []scored, layer, ef int) ([]scored, error) {
	wk.visited.reset()
	wk.cand = wk.cand[:0]
	wk.res = wk.res[:0]
	// self is walked through (an overwritten item may be the only way to its old neighbours)
	// but never returned.
	offer := func(s scored) {
		if s.id == self {
			return
		}
		if len(wk.res) < ef {
			wk.res.push(s)
		} else if before(s, wk.res.top()) {
			wk.res.replaceTop(s)
		}
	}
	for _, e := range eps {
		if wk.visited.insert(e.id) {
			wk.cand.push(e)
			offer(e)
		}
	}
	for len(wk.cand) > 0 {
		c := wk.cand.pop()
		if len(wk.res) >= ef && c.dist > wk.res.top().dist {
			break
		}
		var err error
		wk.ids, err = wk.neighbours(c.id, layer, wk.ids[:0])
		if err != nil {
			return nil, err
		}
		wk.pend = wk.pend[:0]
		for _, id := range wk.ids {
			if !wk.visited.insert(id) {
				continue
			}
			v, err := wk.vector(id)
			if err != nil {
				return nil, err
			}
			if v != nil {
				vecmath.Prefetch(v)
				wk.pend = append(wk.pend, pendingVector{id, v})
			}
		}
		for _, pv := range wk.pend {
			s := scored{wk.dist(qv, pv.v), pv.id}
			if len(wk.res) < ef || before(s, wk.res.top()) {
				wk.cand.push(s)
				offer(s)
			}
		}
	}
	out := append(wk.scratch[:0], wk.res...)
	sortScored(out)
	wk.scratch = out
	return out, nil
}

// selectNeighbours is the neighbour-selection heuristic: candidates ascending, each kept unless
// a kept one is closer to it (times alpha) than it is to the query, until limit are kept.
// Candidates whose vector is gone are dropped. The result is appended to dst.
func (wk *worker) selectNeighbours(dst, cands []scored, limit int) ([]scored, error) {
	sortScored(cands)
	alpha := wk.b.opts.Alpha
	for _, c := range cands {
		if len(dst) >= limit {
			break
		}
		vc, err := wk.vector(c.id)
		if err != nil {
			return nil, err
		}
		if vc == nil {
			continue
		}
		keep := true
		for _, s := range dst {
			vs, err := wk.vector(s.id)
			if err != nil {
				return nil, err
			}
			if alpha*wk.dist(vc, vs) < c.dist {
				keep = false
				break
			}
		}
		if keep {
			dst = append(dst, c)
		}
	}
	return dst, nil
}

func (b *builder) limit(layer int) int {
	if layer == 0 {
		return b.opts.M0
	}
	return b.opts.M
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
		return ll, nil
	}
	ids, err := wk.diskLinks(id, layer, nil)
	if err != nil {
		return nil, err
	}
	nan := float32(math.NaN())
	for _, x := range ids {
		if x == id {
			n.dirty |= 1 << layer // drop self-links written by the reference
			continue
		}
		v, err := wk.vector(x)
		if err != nil {
			return nil, err
		}
		if v == nil {
			n.dirty |= 1 << layer
			continue
		}
		ll.links = append(ll.links, scored{nan, x})
	}
	return ll, nil
}

// fillDistances computes the distances from id that are still unknown in links.
func (wk *worker) fillDistances(id uint32, links []scored) error {
	v, err := wk.vector(id)
	if err != nil {
		return err
	}
	for i := range links {
		if links[i].dist == links[i].dist {
			continue
		}
		u, err := wk.vector(links[i].id)
		if err != nil {
			return err
		}
		if v == nil || u == nil {
			links[i].dist = float32(math.Inf(1))
			continue
		}
		links[i].dist = wk.dist(v, u)
	}
	return nil
}

// addLink adds a link from p to q (at distance d) on layer, re-pruning p's list with q when it
// is full.
func (wk *worker) addLink(p, q uint32, d float32, layer int) error {
	if p == q {
		return nil
	}
	n := wk.b.nodes.getOrPut(p, &node{})
	n.mu.Lock()
	defer n.mu.Unlock()
	ll, err := wk.loadLayer(p, n, layer)
	if err != nil {
		return err
	}
	for _, s := range ll.links {
		if s.id == q {
			return nil
		}
	}
	n.dirty |= 1 << layer
	if len(ll.links) < wk.b.limit(layer) {
		ll.links = append(ll.links, scored{d, q})
		return nil
	}
	if err := wk.fillDistances(p, ll.links); err != nil {
		return err
	}
	cands := append(append(wk.scratch[:0], ll.links...), scored{d, q})
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
			if cn := wk.b.nodes.get(c.id); cn == nil || !cn.fresh || wk.b.relinking {
				wk.b.noteDropped(c.id, layer)
			}
		}
	}
	ll.links = append(ll.links[:0], sel...)
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
	n := b.nodes.getOrPut(q, &node{})
	n.mu.Lock()
	ll := n.layer(layer)
	ll.loaded = true
	if limit := b.limit(layer); cap(ll.links) < limit {
		ll.links = make([]scored, 0, limit) // room for the links added later
	}
	ll.links = append(ll.links[:0], links...)
	n.dirty |= 1 << layer
	n.mu.Unlock()
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
	n := b.nodes.getOrPut(q, &node{})
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
	var next atomic.Int64
	var wg sync.WaitGroup
	for t := 0; t < threads; t++ {
		wk := wk
		if t > 0 {
			if wk, err = b.newWorker(); err != nil {
				b.fail(err)
				break
			}
		}
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
				if j >= len(rest) {
					return
				}
				if err := wk.insert(rest[j], b.levels[rest[j]]); err != nil {
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
		for _, s := range n.layers[j.layer].links {
			if c, ok := atRisk[uint64(s.id)<<8|uint64(j.layer)]; ok {
				atRisk[uint64(s.id)<<8|uint64(j.layer)] = c + 1
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
	n := wk.b.nodes.getOrPut(w.id, &node{})
	n.mu.Lock()
	defer n.mu.Unlock()
	ll, err := wk.loadLayer(w.id, n, layer)
	if err != nil {
		return err
	}
	if err := wk.fillDistances(w.id, ll.links); err != nil {
		return err
	}
	sortScored(ll.links)
	if len(ll.links) >= wk.b.limit(layer) {
		ll.links = ll.links[:wk.b.limit(layer)-1]
	}
	ll.links = append(ll.links, scored{w.dist, id})
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
	for _, s := range n.layers[layer].links {
		if s.id == q {
			return true
		}
	}
	return false
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
	links := make([]scored, len(cands))
	for i, x := range cands {
		links[i] = scored{float32(math.NaN()), x}
	}
	if len(links) > b.limit(layer) {
		if err := wk.fillDistances(id, links); err != nil {
			return err
		}
		links, err = wk.selectNeighbours(nil, links, b.limit(layer))
		if err != nil {
			return err
		}
	}
	b.setLinks(id, layer, links)
	return nil
}

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
	// pages to about 70%, as the reference's hash-map order does.
	slices.SortFunc(changed, func(x, y entry) int {
		hx, hy := splitmix64(uint64(x.id)), splitmix64(uint64(y.id))
		if hx < hy {
			return -1
		}
		if hx > hy {
			return 1
		}
		return 0
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
			ids = ids[:0]
			for _, s := range e.n.layers[l].links {
				ids = append(ids, s.id)
			}
			slices.Sort(ids)
			ids = slices.Compact(ids)
			var err error
			if val, err = AppendLinksValue(val[:0], ids); err != nil {
				return err
			}
			key = LinksKey(b.w.index, e.id, uint8(l)).Append(key[:0])
			if err := b.txn.txn.Put(dbi, key, val, 0); err != nil {
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
	if err := b.txn.txn.Put(dbi, MetadataKey(b.w.index).Bytes(), val, 0); err != nil {
		return fmt.Errorf("write metadata: %w", err)
	}
	if err := b.txn.txn.Put(dbi, VersionKey(b.w.index).Bytes(), FormatVersion.Append(nil), 0); err != nil {
		return fmt.Errorf("write version: %w", err)
	}
	return nil
}

// Validate checks the options without changing them.
func (o BuildOptions) Validate() error { return o.normalize() }

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
				if n := b.nodes.get(id); n != nil && n.fresh {
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
		b.nodes.each(func(id uint32, n *node) {
			for l := range n.layers {
				for _, s := range n.layers[l].links {
					key := uint64(s.id)<<8 | uint64(l)
					if c, ok := counts[key]; ok {
						counts[key] = c + 1
					}
				}
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
			if n := b.nodes.get(id); n == nil || !n.fresh {
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
						if v, err := wk.vector(y); err != nil {
							return err
						} else if v != nil {
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
			seeds, _, err := wk.descend(v, z, 0)
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

// descend returns the entry for a search of v on layer: the closest entry point, walked greedily
// down the layers above; and the graph's top layer.
func (wk *worker) descend(v []byte, self uint32, layer int) ([]scored, int, error) {
	eps, top := wk.b.topEntryPoints()
	var cur []scored
	for _, e := range eps {
		u, err := wk.vector(e)
		if err != nil {
			return nil, top, err
		}
		if u != nil {
			cur = append(cur, scored{wk.dist(v, u), e})
		}
	}
	sortScored(cur)
	if len(cur) > 1 {
		cur = cur[:1]
	}
	for l := top; l > layer && len(cur) > 0; l-- {
		found, err := wk.searchLayer(v, self, cur, l, 1)
		if err != nil {
			return nil, top, err
		}
		if len(found) > 0 {
			cur = append(cur[:0], found[0])
		}
	}
	return cur, top, nil
}
