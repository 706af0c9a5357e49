package core

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/RoaringBitmap/roaring/v2"
)

// DefaultLinearBelow is the candidate count under which a filtered search scans the
// candidates instead of walking the graph.
const DefaultLinearBelow = 1000

// DefaultLinearBelowRatio is the largest fraction of the index's items a filtered search's
// candidates may be for it to scan them instead of walking the graph (1: any fraction, so
// that by default only DefaultLinearBelow decides).
const DefaultLinearBelowRatio = 1.0

// SearchOptions are the parameters of a search.
type SearchOptions struct {
	// Count is the number of neighbours wanted (at least 1).
	Count int
	// Ef is the size of the dynamic candidate list on layer 0; the search uses max(Ef, Count).
	Ef int
	// Candidates, if not nil, restricts the results to these items.
	Candidates *roaring.Bitmap
	// LinearBelow and LinearBelowRatio choose how a filtered search runs, by the reference's
	// rule: it computes the distance to every candidate (exact results) instead of walking the
	// graph when c < LinearBelow and c / n <= LinearBelowRatio, where c is the number of
	// candidates that are items of the index and n the number of items (the ratio computed in
	// float32, as the reference does). The decision is made for each search, on its own
	// candidates.
	//
	// LinearBelow: 0 means DefaultLinearBelow, negative never scans. LinearBelowRatio: 0 means
	// DefaultLinearBelowRatio, negative never scans, above 1 or NaN is refused.
	LinearBelow      int
	LinearBelowRatio float32
	// Rerank, for a reader in ReadCompressed mode, is how many of the best candidates found
	// with codes are re-ranked with their exact vectors (0: rerankDefault; at least Count).
	Rerank int
}

// rerankDefault is the number of candidates a compressed search re-ranks by default: twice the
// results asked for, at least 20. Each re-ranked candidate may cost a read from the disk. On
// GloVe-50 (399,000 cosine vectors) and 256-d clustered vectors, recall@10 was the same to four
// digits re-ranking 14, 20 or 40 at every ef_search from 10 to 160; 10 lost 0.013 at 160.
func rerankDefault(count, ef int) int { return min(ef, max(2*count, 20)) }

func (o *SearchOptions) normalize() error {
	if o.Count < 1 {
		return invalidf("the number of results must be at least 1, got %d", o.Count)
	}
	if o.Ef < 0 {
		return invalidf("ef_search must not be negative, got %d", o.Ef)
	}
	o.Ef = max(o.Ef, o.Count)
	if o.LinearBelow == 0 {
		o.LinearBelow = DefaultLinearBelow
	}
	if o.LinearBelowRatio != o.LinearBelowRatio || o.LinearBelowRatio > 1 {
		return invalidf("linear_below_ratio must be between 0 and 1, got %v", o.LinearBelowRatio)
	}
	if o.LinearBelowRatio == 0 {
		o.LinearBelowRatio = DefaultLinearBelowRatio
	}
	if o.Rerank < 0 {
		return invalidf("rerank must not be negative, got %d", o.Rerank)
	}
	if o.Rerank == 0 {
		o.Rerank = rerankDefault(o.Count, o.Ef)
	}
	o.Rerank = max(o.Rerank, o.Count)
	return nil
}

// scans reports whether a search whose candidates hold c of the index's n items computes the
// distance to each of them instead of walking the graph (see SearchOptions.LinearBelow).
func (o *SearchOptions) scans(c, n uint64) bool {
	if o.LinearBelow <= 0 || o.LinearBelowRatio < 0 || c >= uint64(o.LinearBelow) {
		return false
	}
	return float32(c)/float32(n) <= o.LinearBelowRatio
}

// Result is one neighbour: an item and its distance to the query.
type Result struct {
	ID       uint32
	Distance float32
}

// searchState is the scratch of one search, kept in the reader's pool between searches so that
// a search allocates nothing in proportion to what it visits.
type searchState struct {
	visited *visitedIDs
	cand    minHeap
	res     maxHeap
	ids     []uint32 // links decoded from the file
	key     [KeySize]byte
	seeds   []scored
	query   []byte
	exclude int64      // an item never returned (the query item), or noItem
	pend    pending    // the neighbours of a hop, their distances computed together
	near    []nearItem // neighbours located in the codes (ReadCompressed)
	cq      codeQuery  // the query prepared for codes (ReadCompressed)
	floats  []float32
}

// Search returns up to opts.Count items closest to query, ascending by (distance, id).
func (r *Reader) Search(txn Txn, query []float32, opts SearchOptions) ([]Result, error) {
	if err := opts.normalize(); err != nil {
		return nil, err
	}
	if err := checkVector(query, r.dims); err != nil {
		return nil, err
	}
	st := r.state.Get().(*searchState)
	defer r.state.Put(st)
	st.query = r.metric.appendValue(st.query[:0], query)
	if r.codes != nil {
		r.codes.prepare(&st.cq, query)
	}
	return r.search(txn, st, st.query, noItem, opts)
}

// SearchItem returns up to opts.Count items closest to item, never item itself; found is false
// if item is not in the index.
func (r *Reader) SearchItem(txn Txn, item uint32, opts SearchOptions) (res []Result, found bool, err error) {
	if err := opts.normalize(); err != nil {
		return nil, false, err
	}
	if !r.meta.Items.Contains(item) {
		return nil, false, nil
	}
	st := r.state.Get().(*searchState)
	defer r.state.Put(st)
	v, err := r.vector(txn, st, item)
	if err != nil || v == nil {
		return nil, false, err
	}
	st.query = append(st.query[:0], v...)
	if r.codes != nil {
		st.floats = r.metric.decodeVector(st.floats[:0], v[1+r.metric.headerSize():], r.dims)
		r.codes.prepare(&st.cq, st.floats)
	}
	res, err = r.search(txn, st, st.query, int64(item), opts)
	return res, err == nil, err
}

const noItem = int64(-1)

// search runs a query given as an encoded item value; self (if not noItem) is excluded and
// used as the starting point on layer 0, like the reference's search by item.
func (r *Reader) search(txn Txn, st *searchState, q []byte, self int64, opts SearchOptions) ([]Result, error) {
	items := r.meta.Items
	filter := opts.Candidates
	scan := false
	if filter != nil {
		filter = roaring.And(filter, items)
		// The reference counts the candidates before it leaves out the query item.
		scan = opts.scans(filter.GetCardinality(), items.GetCardinality())
		if self >= 0 {
			filter.Remove(uint32(self))
		}
	}
	st.exclude = self
	eligible := items.GetCardinality()
	if self >= 0 {
		eligible--
	}
	if eligible == 0 || (filter != nil && filter.IsEmpty()) {
		return []Result{}, nil
	}
	if scan {
		return r.bruteForce(txn, st, q, filter, opts.Count)
	}
	st.visited.reset()
	st.res = st.res[:0]
	seeds := st.seeds[:0]
	if self >= 0 {
		seeds = append(seeds, scored{0, uint32(self)})
	} else {
		for _, ep := range r.meta.EntryPoints {
			d, ok, err := r.walkDistance(txn, st, q, ep)
			if err != nil {
				return nil, err
			}
			if ok {
				seeds = append(seeds, scored{d, ep})
			}
		}
		if len(seeds) > 1 {
			sortScored(seeds)
		}
		if len(seeds) > 0 {
			best := seeds[0]
			for l := int(r.meta.MaxLevel); l >= 1; l-- {
				var err error
				if best, err = r.greedy(txn, st, q, best, l); err != nil {
					return nil, err
				}
			}
			seeds = append(seeds[:0], best)
		}
	}
	st.seeds = seeds
	if err := r.visit(txn, st, q, seeds, opts.Ef, filter); err != nil {
		return nil, err
	}
	// Too few results (a selective filter, or a part of the graph not reached): go on from
	// every item not visited yet, as the reference does, until Count results are found.
	if len(st.res) < opts.Count {
		rest := filter
		if rest == nil {
			rest = items
		}
		for it := rest.Iterator(); it.HasNext() && len(st.res) < opts.Count; {
			id := it.Next()
			if st.visited.contains(id) {
				continue
			}
			d, ok, err := r.walkDistance(txn, st, q, id)
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
			st.seeds = append(st.seeds[:0], scored{d, id})
			if err := r.visit(txn, st, q, st.seeds, opts.Ef, filter); err != nil {
				return nil, err
			}
		}
	}
	out := []scored(st.res)
	sortScored(out)
	if r.codes != nil {
		out = r.rerank(st, q, out, opts.Rerank)
	}
	n := min(len(out), opts.Count)
	res := make([]Result, n)
	for i := range res {
		res[i] = Result{out[i].id, out[i].dist}
	}
	return res, nil
}

// greedy walks layer from start to the closest item it can reach (ef = 1).
func (r *Reader) greedy(txn Txn, st *searchState, q []byte, start scored, layer int) (scored, error) {
	best := start
	for changed := true; changed; {
		changed = false
		ids, err := r.neighbours(txn, st, best.id, layer)
		if err != nil {
			return best, err
		}
		if r.codes == nil {
			if err := r.gather(txn, st, ids, false); err != nil {
				return best, err
			}
			st.pend.compute(r.metric, q)
			for i, id := range st.pend.ids {
				if s := (scored{st.pend.dists[i], id}); before(s, best) {
					best, changed = s, true
				}
			}
			continue
		}
		for _, id := range ids {
			d, ok, err := r.walkDistance(txn, st, q, id)
			if err != nil {
				return best, err
			}
			if !ok {
				continue
			}
			if s := (scored{d, id}); before(s, best) {
				best, changed = s, true
			}
		}
	}
	return best, nil
}

// visit is the layer-0 beam search: every reached item is a candidate to expand, only those in
// filter (all if nil) enter the results. st.visited and st.res carry over between calls.
func (r *Reader) visit(txn Txn, st *searchState, q []byte, seeds []scored, ef int, filter *roaring.Bitmap) error {
	st.cand = st.cand[:0]
	for _, s := range seeds {
		if !st.visited.insert(s.id) {
			continue
		}
		st.cand.push(s)
		r.offer(st, s, ef, filter)
	}
	for len(st.cand) > 0 {
		c := st.cand.pop()
		if len(st.res) >= ef && c.dist > st.res.top().dist {
			break
		}
		ids, err := r.neighbours(txn, st, c.id, 0)
		if err != nil {
			return err
		}
		if r.codes != nil {
			// Every neighbour's code is asked for before the first distance, so that the
			// hop's cache misses overlap.
			st.near = st.near[:0]
			for _, id := range ids {
				if !st.visited.insert(id) {
					continue
				}
				if slot := r.codes.slot(id); slot >= 0 {
					r.codes.prefetch(slot)
					st.near = append(st.near, nearItem{id: id, slot: slot})
				}
			}
			for _, it := range st.near {
				if s := (scored{r.codes.dist(&st.cq, it.slot), it.id}); st.improves(s, ef) {
					r.admit(st, s, ef, filter)
				}
			}
			continue
		}
		if err := r.gather(txn, st, ids, true); err != nil {
			return err
		}
		// The kernel asks for the first lines of every vector first, then for all of the next
		// one while it computes one (the per-vector prefetch it took over from measured about
		// 10% faster on 784-d vectors).
		st.pend.compute(r.metric, q)
		for i, id := range st.pend.ids {
			if s := (scored{st.pend.dists[i], id}); st.improves(s, ef) {
				r.admit(st, s, ef, filter)
			}
		}
	}
	return nil
}

// gather sets st.pend to the items of ids that have a vector, with their values (whose
// distances pending.compute then computes, asking for all their cache lines first). With mark,
// it marks them visited and leaves out those visited before.
func (r *Reader) gather(txn Txn, st *searchState, ids []uint32, mark bool) error {
	st.pend.reset()
	for _, id := range ids {
		if mark && !st.visited.insert(id) {
			continue
		}
		v := r.cachedVector(id)
		if v == nil {
			var err error
			if v, err = r.vector(txn, st, id); err != nil {
				return err
			}
		}
		if v != nil {
			st.pend.add(id, v)
		}
	}
	return nil
}

// improves reports whether a newly reached item is among the ef best so far, and so a candidate
// to expand (most are not; the check is small enough to be inlined). The reference compares with
// the worst result before the hop instead: it finds less at low ef_search, 0.880 against 0.897
// recall@10 on GloVe-50 at ef_search 10, and the same from 40 up.
func (st *searchState) improves(s scored, ef int) bool {
	return len(st.res) < ef || before(s, st.res.top())
}

// admit makes an item that improves the results a candidate to expand, and a result if filter
// lets it.
func (r *Reader) admit(st *searchState, s scored, ef int, filter *roaring.Bitmap) {
	st.cand.push(s)
	r.offer(st, s, ef, filter)
	r.prefetchLinks(s.id)
}

// walkDistance is the distance the graph walk uses from the query (q encoded, or st.cq) to
// item id: from codes in ReadCompressed mode, else exact. ok is false if id has no vector.
func (r *Reader) walkDistance(txn Txn, st *searchState, q []byte, id uint32) (float32, bool, error) {
	if r.codes != nil {
		slot := r.codes.slot(id)
		if slot < 0 {
			return 0, false, nil
		}
		return r.codes.dist(&st.cq, slot), true, nil
	}
	v := r.cachedVector(id)
	if v == nil {
		var err error
		if v, err = r.vector(txn, st, id); err != nil || v == nil {
			return 0, false, err
		}
	}
	return r.metric.distance(q, v), true, nil
}

// rerank replaces the approximate distances of the best n of found (sorted by them) with exact
// ones and returns those n sorted. Their pages are asked for together first, so that the reads
// overlap instead of waiting for one fault after another.
func (r *Reader) rerank(st *searchState, q []byte, found []scored, n int) []scored {
	found = found[:min(n, len(found))]
	for _, s := range found {
		if slot := r.codes.slot(s.id); slot >= 0 {
			adviseBytes(refBytes(r.codes.refs[slot], r.valueLen), adviceWillNeed)
		}
	}
	for i, s := range found {
		if slot := r.codes.slot(s.id); slot >= 0 {
			found[i].dist = r.metric.distance(q, refBytes(r.codes.refs[slot], r.valueLen))
		}
	}
	sortScored(found)
	return found
}

func (r *Reader) offer(st *searchState, s scored, ef int, filter *roaring.Bitmap) {
	if int64(s.id) == st.exclude || (filter != nil && !filter.Contains(s.id)) {
		return
	}
	if len(st.res) < ef {
		st.res.push(s)
	} else if before(s, st.res.top()) {
		st.res.replaceTop(s)
	}
}

// bruteForce computes the distance to every candidate.
func (r *Reader) bruteForce(txn Txn, st *searchState, q []byte, cands *roaring.Bitmap, count int) ([]Result, error) {
	h := make(maxHeap, 0, count+1)
	for it := cands.Iterator(); it.HasNext(); {
		id := it.Next()
		v, err := r.vector(txn, st, id)
		if err != nil {
			return nil, err
		}
		if v == nil {
			continue
		}
		s := scored{r.metric.distance(q, v), id}
		if len(h) < count {
			h.push(s)
		} else if before(s, h.top()) {
			h.replaceTop(s)
		}
	}
	out := []scored(h)
	sortScored(out)
	res := make([]Result, len(out))
	for i, s := range out {
		res[i] = Result{s.id, s.dist}
	}
	return res, nil
}

// SearchBatch runs Search for nq queries stored one after another in queries, on up to threads
// goroutines (<= 0: GOMAXPROCS, and never more than the snapshot's transactions). fn receives
// each query's results; it is called concurrently, for distinct i.
func (r *Reader) SearchBatch(snap *Snapshot, queries []float32, nq int, opts SearchOptions, threads int, fn func(i int, res []Result)) error {
	return r.SearchBatchFiltered(snap, queries, nq, opts, nil, threads, fn)
}

// SearchBatchFiltered is SearchBatch with a filter per query: query i searches with
// candidates(i) as its Candidates (nil: no filter) instead of opts.Candidates, so the choice
// between scanning the candidates and walking the graph is made for each query on its own
// filter. candidates is called once per query, concurrently, from the goroutine that searches
// it; a nil candidates function means opts.Candidates for every query.
func (r *Reader) SearchBatchFiltered(snap *Snapshot, queries []float32, nq int, opts SearchOptions, candidates func(i int) *roaring.Bitmap, threads int, fn func(i int, res []Result)) error {
	if len(queries) != nq*r.dims {
		return fmt.Errorf("%d queries of %d dimensions need %d values, got %d: %w", nq, r.dims, nq*r.dims, len(queries),
			&DimensionError{Expected: r.dims, Received: len(queries) / max(nq, 1)})
	}
	return r.parallel(snap, nq, threads, func(txn Txn, i int) error {
		o := opts
		if candidates != nil {
			o.Candidates = candidates(i)
		}
		res, err := r.Search(txn, queries[i*r.dims:(i+1)*r.dims], o)
		if err != nil {
			return fmt.Errorf("query %d: %w", i, err)
		}
		fn(i, res)
		return nil
	})
}

// SearchItemBatch runs SearchItem for every item of items like SearchBatch.
func (r *Reader) SearchItemBatch(snap *Snapshot, items []uint32, opts SearchOptions, threads int, fn func(i int, res []Result, found bool)) error {
	return r.SearchItemBatchFiltered(snap, items, opts, nil, threads, fn)
}

// SearchItemBatchFiltered is SearchItemBatch with a filter per item, like SearchBatchFiltered:
// the search of items[i] uses candidates(i) (nil: no filter).
func (r *Reader) SearchItemBatchFiltered(snap *Snapshot, items []uint32, opts SearchOptions, candidates func(i int) *roaring.Bitmap, threads int, fn func(i int, res []Result, found bool)) error {
	return r.parallel(snap, len(items), threads, func(txn Txn, i int) error {
		o := opts
		if candidates != nil {
			o.Candidates = candidates(i)
		}
		res, found, err := r.SearchItem(txn, items[i], o)
		if err != nil {
			return fmt.Errorf("item %d: %w", items[i], err)
		}
		fn(i, res, found)
		return nil
	})
}

// parallel calls fn(txn, i) for i in [0, n) on up to threads goroutines, each holding one of
// the snapshot's transactions, and returns the first error.
func (r *Reader) parallel(snap *Snapshot, n, threads int, fn func(Txn, int) error) error {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	threads = max(1, min(threads, snap.Size(), n))
	var next atomic.Int64
	var failed atomic.Bool
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for t := 0; t < threads; t++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			txn, err := snap.Acquire()
			if err != nil {
				once.Do(func() { firstErr = err })
				failed.Store(true)
				return
			}
			defer snap.Release(txn)
			defer func() {
				if p := recover(); p != nil {
					once.Do(func() { firstErr = fmt.Errorf("internal error in search: %v", p) })
					failed.Store(true)
				}
			}()
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(txn, i); err != nil {
					once.Do(func() { firstErr = err })
					failed.Store(true)
					return
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}
