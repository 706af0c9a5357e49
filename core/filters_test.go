package core

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/RoaringBitmap/roaring/v2"
)

// filterIndex builds a sparse graph (M = 4, so that a walk with a small ef is visibly
// approximate) of n random items, reproducibly.
func filterIndex(t *testing.T, n, dims int) (*Env, *Database, map[uint32][]float32, *rand.Rand) {
	t.Helper()
	env, db := testDB(t)
	rng := rand.New(rand.NewPCG(21, 22))
	vecs := randomVectors(rng, n, dims)
	buildItems(t, env, db, 0, Euclidean, dims, vecs, BuildOptions{M: 4, EfConstruction: 20, Threads: 1, Seed: 5})
	return env, db, vecs, rng
}

// exactIn is the exact answer of a search restricted to cands, leaving out self (>= 0).
func exactIn(enc map[uint32][]byte, cands *roaring.Bitmap, q []float32, k int, self int64) []Result {
	sub := map[uint32][]byte{}
	for id, v := range enc {
		if (cands == nil || cands.Contains(id)) && int64(id) != self {
			sub[id] = v
		}
	}
	out := []Result{}
	for _, s := range exactNeighbours(Euclidean, sub, q, k) {
		out = append(out, Result{s.id, s.dist})
	}
	return out
}

func TestLinearRule(t *testing.T) {
	cases := []struct {
		below int
		ratio float32
		c, n  uint64
		want  bool
	}{
		{1000, 1, 999, 3000, true},
		{1000, 1, 1000, 3000, false}, // c < linear_below, strictly
		{0, 0, 999, 3000, true},      // the defaults: 1000 and 1.0
		{-1, 1, 1, 3000, false},      // never
		{5000, -1, 1, 3000, false},   // never
		{5000, 0.1, 300, 3000, true}, // c / n == ratio in float32 scans
		{5000, 0.1, 301, 3000, false},
		{5000, 0.09, 300, 3000, false},
		{5000, 1, 3000, 3000, true},
		{5000, 0.5, 1, 2, true},
		{5000, 0.5, 2, 3, false},
	}
	for _, c := range cases {
		o := SearchOptions{Count: 1, LinearBelow: c.below, LinearBelowRatio: c.ratio}
		if err := o.normalize(); err != nil {
			t.Fatal(err)
		}
		if got := o.scans(c.c, c.n); got != c.want {
			t.Errorf("linear_below %d, ratio %v, %d of %d candidates: scans %v, want %v", c.below, c.ratio, c.c, c.n, got, c.want)
		}
	}
	for _, bad := range []float32{1.0000001, 2, float32(math.NaN()), float32(math.Inf(1))} {
		o := SearchOptions{Count: 1, LinearBelowRatio: bad}
		if err := o.normalize(); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ratio %v: %v, want ErrInvalidArgument", bad, err)
		}
	}
}

// TestLinearBelowChoosesTheScan checks each way of choosing the scan through the results: a
// scan is exact, the sparse graph with a small ef is not for every query.
func TestLinearBelowChoosesTheScan(t *testing.T) {
	const n, dims = 2000, 16
	env, db, vecs, rng := filterIndex(t, n, dims)
	r, txn := openReader(t, env, db, 0, Euclidean)
	enc := encodeAll(Euclidean, vecs)
	cands := roaring.New()
	for id := uint32(0); id < n; id += 10 {
		cands.Add(id) // 200 candidates, 0.1 of the items
	}
	queries := make([][]float32, 30)
	for i := range queries {
		queries[i] = randomVectors(rng, 1, dims)[0]
	}
	exactAll := func(opts SearchOptions) bool {
		t.Helper()
		opts.Count, opts.Ef, opts.Candidates = 10, 10, cands
		all := true
		for _, q := range queries {
			got, err := r.Search(txn, q, opts)
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range got {
				if !cands.Contains(x.ID) {
					t.Fatalf("result %d is not a candidate", x.ID)
				}
			}
			if len(got) != 10 {
				t.Fatalf("%d results, want 10", len(got))
			}
			if !slices.Equal(got, exactIn(enc, cands, q, 10, noItem)) {
				all = false
			}
		}
		return all
	}
	if !exactAll(SearchOptions{}) {
		t.Error("default options (200 < 1000 candidates): not a scan")
	}
	if exactAll(SearchOptions{LinearBelow: -1}) {
		t.Error("linear_below never: every result exact, the graph walk was not taken")
	}
	if exactAll(SearchOptions{LinearBelow: 200}) {
		t.Error("linear_below 200 with 200 candidates: scanned")
	}
	if !exactAll(SearchOptions{LinearBelow: 201}) {
		t.Error("linear_below 201 with 200 candidates: not a scan")
	}
	if !exactAll(SearchOptions{LinearBelowRatio: 0.1}) {
		t.Error("ratio 0.1 with a tenth of the items: not a scan")
	}
	if exactAll(SearchOptions{LinearBelowRatio: 0.09}) {
		t.Error("ratio 0.09 with a tenth of the items: scanned")
	}
	if exactAll(SearchOptions{LinearBelowRatio: -1}) {
		t.Error("ratio never: scanned")
	}
	// By item: the item counts among the candidates for the rule (as in the reference) but is
	// never returned.
	item := uint32(20) // a candidate
	for _, tc := range []struct {
		below int
		exact bool
	}{{200, false}, {201, true}} {
		got, found, err := r.SearchItem(txn, item, SearchOptions{Count: 10, Ef: 10, Candidates: cands, LinearBelow: tc.below})
		if err != nil || !found {
			t.Fatal(found, err)
		}
		want := exactIn(enc, cands, vecs[item], 10, int64(item))
		if slices.Contains(resultIDs(got), item) {
			t.Fatalf("by item %d: the item is among its results", item)
		}
		if tc.exact && !slices.Equal(got, want) {
			t.Errorf("by item, linear_below %d: %v, want the scan's %v", tc.below, got, want)
		}
	}
}

func resultIDs(res []Result) []uint32 {
	ids := make([]uint32, len(res))
	for i, x := range res {
		ids[i] = x.ID
	}
	return ids
}

// TestSearchBatchFiltered checks that a batch with a filter per query gives, for each query,
// what a search of that query alone with its own filter gives (so the scan is chosen per
// query), on several goroutines.
func TestSearchBatchFiltered(t *testing.T) {
	const n, dims, nq = 2000, 16, 36
	env, db, vecs, rng := filterIndex(t, n, dims)
	enc := encodeAll(Euclidean, vecs)
	snap, err := env.OpenSnapshot(3)
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	r, err := OpenSnapshotReader(snap, db, 0, Euclidean)
	if err != nil {
		t.Fatal(err)
	}
	filters := make([]*roaring.Bitmap, nq)
	queries := make([]float32, 0, nq*dims)
	for i := 0; i < nq; i++ {
		queries = append(queries, randomVectors(rng, 1, dims)[0]...)
		switch i % 6 {
		case 0: // no filter
		case 1:
			filters[i] = roaring.New() // matches nothing
		case 2:
			filters[i] = roaring.BitmapOf(n+1, n+2, 1<<31) // no item of the index
		case 3: // small: scanned
			for filters[i] = roaring.New(); filters[i].GetCardinality() < 40; {
				filters[i].Add(uint32(rng.IntN(n)))
			}
			filters[i].Add(n + 7)
		default: // two thirds of the items, more than 1000: walked
			filters[i] = roaring.New()
			for id := uint32(0); id < n; id++ {
				if id%3 != uint32(i%3) {
					filters[i].Add(id)
				}
			}
		}
	}
	opts := SearchOptions{Count: 10, Ef: 30, Candidates: roaring.BitmapOf(1)} // Candidates: overridden
	got := make([][]Result, nq)
	err = r.SearchBatchFiltered(snap, queries, nq, opts, func(i int) *roaring.Bitmap { return filters[i] }, 3,
		func(i int, res []Result) { got[i] = res })
	if err != nil {
		t.Fatal(err)
	}
	txn, err := snap.Acquire()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release(txn)
	for i := 0; i < nq; i++ {
		q := queries[i*dims : (i+1)*dims]
		o := opts
		o.Candidates = filters[i]
		want, err := r.Search(txn, q, o)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got[i], want) {
			t.Fatalf("query %d: batch %v, alone %v", i, got[i], want)
		}
		switch i % 6 {
		case 0, 4, 5:
			if len(want) != 10 {
				t.Fatalf("query %d: %d results", i, len(want))
			}
		case 1, 2:
			if len(want) != 0 {
				t.Fatalf("query %d: %v for a filter without items", i, want)
			}
		case 3:
			if exact := exactIn(enc, filters[i], q, 10, noItem); !slices.Equal(want, exact) {
				t.Fatalf("query %d (40 candidates, scanned): %v, want %v", i, want, exact)
			}
		}
	}

	items := make([]uint32, nq)
	for i := range items {
		items[i] = uint32(i * 50)
	}
	items[5] = n + 3 // not in the index
	gotItems := make([][]Result, nq)
	found := make([]bool, nq)
	err = r.SearchItemBatchFiltered(snap, items, opts, func(i int) *roaring.Bitmap { return filters[i] }, 3,
		func(i int, res []Result, ok bool) { gotItems[i], found[i] = res, ok })
	if err != nil {
		t.Fatal(err)
	}
	for i, it := range items {
		o := opts
		o.Candidates = filters[i]
		want, ok, err := r.SearchItem(txn, it, o)
		if err != nil {
			t.Fatal(err)
		}
		if ok != found[i] || !slices.Equal(gotItems[i], want) {
			t.Fatalf("item %d: batch %v %v, alone %v %v", it, found[i], gotItems[i], ok, want)
		}
	}
	if found[5] {
		t.Fatal("an item not in the index was found")
	}

	// A nil function is SearchBatch: opts.Candidates for every query.
	err = r.SearchBatchFiltered(snap, queries, nq, opts, nil, 2, func(i int, res []Result) {
		if len(res) != 1 || res[0].ID != 1 {
			t.Errorf("query %d: %v, want only item 1", i, res)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	bad := opts
	bad.LinearBelowRatio = 1.5
	err = r.SearchBatchFiltered(snap, queries, nq, bad, func(i int) *roaring.Bitmap { return filters[i] }, 2, func(int, []Result) {})
	if !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("ratio 1.5: %v", err)
	}
}
