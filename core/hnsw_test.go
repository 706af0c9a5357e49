package core

import (
	"bytes"
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/PowerDNS/lmdb-go/lmdb"
	"github.com/RoaringBitmap/roaring/v2"
)

var smallOpts = BuildOptions{M: 3, M0: 3, EfConstruction: 32}

func TestWriteOneVector(t *testing.T) {
	env, db := testDB(t)
	buildItems(t, env, db, 0, Euclidean, 3, map[uint32][]float32{0: {0, 1, 2}}, smallOpts)
	r, txn := openReader(t, env, db, 0, Euclidean)
	if r.Len() != 1 || !r.Contains(0) || r.Dimensions() != 3 || r.Version() != FormatVersion {
		t.Fatalf("len %d contains %v dims %d version %v", r.Len(), r.Contains(0), r.Dimensions(), r.Version())
	}
	if !slices.Equal(r.EntryPoints(), []uint32{0}) {
		t.Fatalf("entry points %v", r.EntryPoints())
	}
	res, err := r.Search(txn, []float32{0, 1, 2}, SearchOptions{Count: 10})
	if err != nil || len(res) != 1 || res[0] != (Result{0, 0}) {
		t.Fatalf("search: %v %v", res, err)
	}
	// The item value is the reference's golden example.
	v, _, _ := get(txn, db, ItemKey(0, 0))
	want := []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x3f, 0, 0, 0, 0x40}
	if !bytes.Equal(v, want) {
		t.Fatalf("item value %x, want %x", v, want)
	}
	// One links entry per layer of the item, empty.
	for l := 0; l <= r.MaxLevel(); l++ {
		v, ok, _ := get(txn, db, LinksKey(0, 0, uint8(l)))
		if !ok || !bytes.Equal(v, []byte{1, 0x3a, 0x30, 0, 0, 0, 0, 0, 0}) {
			t.Fatalf("links layer %d: %x %v", l, v, ok)
		}
	}
	// by_item of the only item returns nothing, never the item itself.
	res, found, err := r.SearchItem(txn, 0, SearchOptions{Count: 10})
	if err != nil || !found || len(res) != 0 {
		t.Fatalf("search item: %v %v %v", res, found, err)
	}
}

func TestU32MaxIDs(t *testing.T) {
	for _, id := range []uint32{math.MaxUint32 - 1, math.MaxUint32} {
		env, db := testDB(t)
		vecs := map[uint32][]float32{id: {1, 2, 3}, 7: {3, 2, 1}}
		buildItems(t, env, db, 0, Euclidean, 3, vecs, smallOpts)
		r, txn := openReader(t, env, db, 0, Euclidean)
		res, err := r.Search(txn, []float32{1, 2, 3}, SearchOptions{Count: 2})
		if err != nil || len(res) != 2 || res[0].ID != id || res[1].ID != 7 {
			t.Fatalf("id %d: %v %v", id, res, err)
		}
		vec, ok, err := r.ItemVector(txn, id)
		if err != nil || !ok || !slices.Equal(vec, []float32{1, 2, 3}) {
			t.Fatalf("vector %v %v %v", vec, ok, err)
		}
	}
}

// TestIndexesBesideNamedDatabases: the records LMDB keeps in the main database for named
// databases ("a" before every index key, "second" among the keys of index 0x7365 = 29541,
// "zz" after 65535's) are not indexes, and listing the main database's indexes steps over them.
func TestIndexesBesideNamedDatabases(t *testing.T) {
	env, db := testDB(t)
	rng := rand.New(rand.NewPCG(3, 4))
	for _, index := range []uint16{0, 0x7365, 65535} {
		buildItems(t, env, db, index, Euclidean, 4, randomVectors(rng, 20, 4), BuildOptions{M: 4, EfConstruction: 20})
	}
	for _, name := range []string{"a", "second", "zz"} {
		named, err := env.OpenDatabase(name, true)
		if err != nil {
			t.Fatal(err)
		}
		buildItems(t, env, named, 3, Euclidean, 4, randomVectors(rng, 10, 4), BuildOptions{M: 4, EfConstruction: 20})
		var idx []int
		if err := env.View(func(txn *ReadTxn) error { idx, err = Indexes(txn, named); return err }); err != nil {
			t.Fatalf("indexes of %q: %v", name, err)
		}
		if !slices.Equal(idx, []int{3}) {
			t.Fatalf("indexes of %q: %v", name, idx)
		}
	}
	var idx []int
	var err error
	if verr := env.View(func(txn *ReadTxn) error { idx, err = Indexes(txn, db); return err }); verr != nil {
		t.Fatal(verr)
	}
	if !slices.Equal(idx, []int{0, 0x7365, 65535}) {
		t.Fatalf("indexes of the main database: %v", idx)
	}
}

func TestMultipleIndexes(t *testing.T) {
	env, db := testDB(t)
	rng := rand.New(rand.NewPCG(1, 2))
	sets := map[uint16]map[uint32][]float32{}
	for _, index := range []uint16{0, 1, 7, 65535} {
		sets[index] = randomVectors(rng, 50, 8)
		buildItems(t, env, db, index, Cosine, 8, sets[index], BuildOptions{M: 4, EfConstruction: 20})
	}
	for index, vecs := range sets {
		r, txn := openReader(t, env, db, index, Cosine)
		if r.Len() != 50 {
			t.Fatalf("index %d has %d items", index, r.Len())
		}
		for id, v := range vecs {
			got, _, _ := r.ItemVector(txn, id)
			if !slices.Equal(got, v) {
				t.Fatalf("index %d item %d: vector differs", index, id)
			}
		}
	}
	var idx []int
	env.View(func(txn *ReadTxn) error { idx, _ = Indexes(txn, db); return nil })
	if !slices.Equal(idx, []int{0, 1, 7, 65535}) {
		t.Fatalf("indexes %v", idx)
	}
	// Clearing one index leaves the others.
	update(t, env, func(txn *WriteTxn) error {
		w, _ := NewWriter(txn, db, 1, 8, Cosine)
		return w.Clear(txn)
	})
	txn, _ := env.BeginRead()
	defer txn.Abort()
	if _, err := OpenReader(txn, db, 1, Cosine); !errors.Is(err, ErrMissingMetadata) {
		t.Fatalf("cleared index: %v", err)
	}
	if _, err := OpenReader(txn, db, 7, Cosine); err != nil {
		t.Fatal(err)
	}
}

// checkGraph verifies the invariants of a built index (reference §1.7, with our fixes): every
// item has a vector and links on layers 0..its level, links point only to items and never to
// the item itself, lists respect the limits, entry points are items of the top layer.
func checkGraph(t *testing.T, env *Env, db *Database, index uint16, opts BuildOptions) {
	t.Helper()
	if err := opts.normalize(); err != nil {
		t.Fatal(err)
	}
	txn, err := env.BeginRead()
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Abort()
	meta, err := readMetadata(txn, db, index)
	if err != nil || meta == nil {
		t.Fatalf("metadata: %v %v", meta, err)
	}
	vectors := roaring.New()
	scanPrefix(txn, db, ModePrefix(index, ModeItem), func(k Key, _ []byte) (bool, error) { vectors.Add(k.Item); return true, nil })
	if !vectors.Equals(meta.Items) {
		t.Fatalf("vectors %v != items %v", vectors.GetCardinality(), meta.Items.GetCardinality())
	}
	levels := map[uint32]int{}
	scanPrefix(txn, db, ModePrefix(index, ModeLinks), func(k Key, v []byte) (bool, error) {
		ids, err := DecodeLinksValue(v, nil)
		if err != nil {
			t.Fatalf("links %v: %v", k, err)
		}
		if !meta.Items.Contains(k.Item) {
			t.Fatalf("links of %d, which is not an item", k.Item)
		}
		if int(k.Layer) != levels[k.Item] && !(k.Layer == 0 && levels[k.Item] == 0) {
			if _, seen := levels[k.Item]; seen && int(k.Layer) != levels[k.Item]+1 {
				t.Fatalf("item %d has layer %d after layer %d", k.Item, k.Layer, levels[k.Item])
			}
		}
		levels[k.Item] = int(k.Layer)
		limit := opts.M
		if k.Layer == 0 {
			limit = opts.M0
		}
		if len(ids) > limit {
			t.Fatalf("item %d layer %d has %d links, limit %d", k.Item, k.Layer, len(ids), limit)
		}
		for _, x := range ids {
			if x == k.Item {
				t.Fatalf("self-link on %d layer %d", x, k.Layer)
			}
			if !meta.Items.Contains(x) {
				t.Fatalf("item %d layer %d links to %d, which is not an item", k.Item, k.Layer, x)
			}
			if _, ok, _ := get(txn, db, LinksKey(index, x, k.Layer)); !ok {
				t.Fatalf("item %d layer %d links to %d, which has no links on that layer", k.Item, k.Layer, x)
			}
		}
		return true, nil
	})
	if len(levels) != int(meta.Items.GetCardinality()) {
		t.Fatalf("%d items have links, %d items", len(levels), meta.Items.GetCardinality())
	}
	for _, ep := range meta.EntryPoints {
		if levels[ep] != int(meta.MaxLevel) {
			t.Fatalf("entry point %d is on layer %d, top is %d", ep, levels[ep], meta.MaxLevel)
		}
	}
	top := 0
	for _, l := range levels {
		top = max(top, l)
	}
	if !meta.Items.IsEmpty() && top != int(meta.MaxLevel) {
		t.Fatalf("highest layer %d, metadata max level %d", top, meta.MaxLevel)
	}
}

// allReachable checks that a search for n items with ef = n returns every item, and that the
// layer-0 graph reaches every item from the entry points.
func allReachable(t *testing.T, env *Env, db *Database, index uint16, metric Metric, dims int) {
	t.Helper()
	r, txn := openReader(t, env, db, index, metric)
	n := int(r.Len())
	if n == 0 {
		return
	}
	res, err := r.Search(txn, make([]float32, dims), SearchOptions{Count: n, Ef: n})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != n {
		t.Fatalf("search returned %d of %d items", len(res), n)
	}
	seen := roaring.New()
	queue := r.EntryPoints()
	for l := r.MaxLevel(); l >= 0; l-- {
		for i := 0; i < len(queue); i++ {
			if seen.CheckedAdd(queue[i]) {
				queue, _ = r.links(txn, queue[i], l, queue)
			}
		}
		if l > 0 {
			queue = seen.ToArray()
			seen.Clear()
		}
	}
	if seen.GetCardinality() != uint64(n) {
		t.Fatalf("graph walk from the entry points reaches %d of %d items", seen.GetCardinality(), n)
	}
}

func TestOverwriteOneItem(t *testing.T) {
	env, db := testDB(t)
	vecs := map[uint32][]float32{}
	for i := uint32(0); i < 6; i++ {
		vecs[i] = []float32{float32(i), 0}
	}
	buildItems(t, env, db, 0, Euclidean, 2, vecs, smallOpts)
	buildItems(t, env, db, 0, Euclidean, 2, map[uint32][]float32{3: {6, 0}}, smallOpts)
	checkGraph(t, env, db, 0, smallOpts)
	allReachable(t, env, db, 0, Euclidean, 2)
	r, txn := openReader(t, env, db, 0, Euclidean)
	res, _ := r.Search(txn, []float32{6, 0}, SearchOptions{Count: 2})
	if res[0] != (Result{3, 0}) || res[1] != (Result{5, 1}) {
		t.Fatalf("after overwrite: %v", res)
	}
}

func TestDeleteDownToEmpty(t *testing.T) {
	env, db := testDB(t)
	vecs := map[uint32][]float32{}
	for i := uint32(0); i < 6; i++ {
		vecs[i] = []float32{float32(i), 0}
	}
	buildItems(t, env, db, 0, Euclidean, 2, vecs, smallOpts)
	for _, del := range [][]uint32{{3}, {1}, {0, 2}, {4, 5}} {
		update(t, env, func(txn *WriteTxn) error {
			w, err := NewWriter(txn, db, 0, 2, Euclidean)
			if err != nil {
				return err
			}
			for _, id := range del {
				if ok, err := w.DelItem(txn, id); err != nil || !ok {
					t.Fatalf("delete %d: %v %v", id, ok, err)
				}
			}
			return w.Build(context.Background(), txn, smallOpts)
		})
		checkGraph(t, env, db, 0, smallOpts)
		allReachable(t, env, db, 0, Euclidean, 2)
		r, txn := openReader(t, env, db, 0, Euclidean)
		for _, id := range del {
			if r.Contains(id) {
				t.Fatalf("%d still in the index", id)
			}
			if _, ok, _ := get(txn, db, LinksKey(0, id, 0)); ok {
				t.Fatalf("%d still has links", id)
			}
		}
	}
	r, txn := openReader(t, env, db, 0, Euclidean)
	if r.Len() != 0 || len(r.EntryPoints()) != 0 || r.MaxLevel() != 0 {
		t.Fatalf("empty index: len %d eps %v max %d", r.Len(), r.EntryPoints(), r.MaxLevel())
	}
	res, err := r.Search(txn, []float32{0, 0}, SearchOptions{Count: 10})
	if err != nil || len(res) != 0 {
		t.Fatalf("search of an empty index: %v %v", res, err)
	}
	// Deleting an absent item reports false and builds fine (reference issue #74).
	update(t, env, func(txn *WriteTxn) error {
		w, _ := NewWriter(txn, db, 0, 2, Euclidean)
		if ok, err := w.DelItem(txn, 0); ok || err != nil {
			t.Fatalf("delete absent: %v %v", ok, err)
		}
		return w.Build(context.Background(), txn, smallOpts)
	})
}

func TestDeleteEntryPoints(t *testing.T) {
	env, db := testDB(t)
	rng := rand.New(rand.NewPCG(3, 4))
	vecs := randomVectors(rng, 400, 16)
	opts := BuildOptions{M: 4, EfConstruction: 40}
	buildItems(t, env, db, 0, Euclidean, 16, vecs, opts)
	for round := 0; round < 4; round++ {
		r, _ := openReader(t, env, db, 0, Euclidean)
		eps := r.EntryPoints()
		update(t, env, func(txn *WriteTxn) error {
			w, _ := NewWriter(txn, db, 0, 16, Euclidean)
			for _, id := range eps {
				w.DelItem(txn, id)
				delete(vecs, id)
			}
			return w.Build(context.Background(), txn, opts)
		})
		checkGraph(t, env, db, 0, opts)
		allReachable(t, env, db, 0, Euclidean, 16)
		r2, _ := openReader(t, env, db, 0, Euclidean)
		if r2.MaxLevel() == 0 && len(vecs) > 100 {
			t.Fatalf("round %d: graph height collapsed to 0 after deleting the entry points", round)
		}
	}
}

func TestRandomAddsAndDeletes(t *testing.T) {
	env, db := testDB(t)
	rng := rand.New(rand.NewPCG(5, 6))
	opts := BuildOptions{M: 6, M0: 6, EfConstruction: 32}
	live := map[uint32][]float32{}
	for round := 0; round < 8; round++ {
		update(t, env, func(txn *WriteTxn) error {
			w, err := NewWriter(txn, db, 0, 8, Cosine)
			if err != nil {
				return err
			}
			for op := 0; op < 150; op++ {
				id := uint32(rng.IntN(400))
				if rng.IntN(3) == 0 {
					ok, err := w.DelItem(txn, id)
					if err != nil {
						return err
					}
					if _, was := live[id]; was != ok {
						t.Fatalf("delete %d reported %v", id, ok)
					}
					delete(live, id)
				} else {
					v := randomVectors(rng, 1, 8)[0]
					if err := w.AddItem(txn, id, v); err != nil {
						return err
					}
					live[id] = v
				}
			}
			return w.Build(context.Background(), txn, opts)
		})
		checkGraph(t, env, db, 0, opts)
		allReachable(t, env, db, 0, Cosine, 8)
		r, txn := openReader(t, env, db, 0, Cosine)
		if r.Len() != uint64(len(live)) {
			t.Fatalf("round %d: %d items, want %d", round, r.Len(), len(live))
		}
		for id, v := range live {
			got, ok, err := r.ItemVector(txn, id)
			if err != nil || !ok || !slices.Equal(got, v) {
				t.Fatalf("item %d: %v %v", id, ok, err)
			}
		}
	}
}

func TestSearchByItemNeverReturnsItself(t *testing.T) {
	env, db := testDB(t)
	rng := rand.New(rand.NewPCG(7, 8))
	vecs := randomVectors(rng, 100, 12)
	vecs[100] = slices.Clone(vecs[0]) // a duplicate at distance 0
	buildItems(t, env, db, 0, Cosine, 12, vecs, BuildOptions{})
	r, txn := openReader(t, env, db, 0, Cosine)
	for _, cands := range []*roaring.Bitmap{nil, roaring.BitmapOf(0, 5, 9, 100)} {
		res, found, err := r.SearchItem(txn, 0, SearchOptions{Count: 10, Candidates: cands})
		if err != nil || !found {
			t.Fatal(found, err)
		}
		if len(res) == 0 || res[0].ID != 100 {
			t.Fatalf("the duplicate should come first: %v", res)
		}
		for _, x := range res {
			if x.ID == 0 {
				t.Fatalf("by item returned the item itself: %v", res)
			}
		}
	}
	if _, found, err := r.SearchItem(txn, 101, SearchOptions{Count: 10}); found || err != nil {
		t.Fatalf("absent item: %v %v", found, err)
	}
}

func TestCandidates(t *testing.T) {
	env, db := testDB(t)
	rng := rand.New(rand.NewPCG(9, 10))
	vecs := randomVectors(rng, 3000, 16)
	buildItems(t, env, db, 0, Euclidean, 16, vecs, BuildOptions{})
	r, txn := openReader(t, env, db, 0, Euclidean)
	enc := encodeAll(Euclidean, vecs)
	for _, size := range []int{1, 10, 999, 1500} {
		cands := roaring.New()
		for cands.GetCardinality() < uint64(size) {
			cands.Add(uint32(rng.IntN(3000)))
		}
		cands.Add(100000) // not an item: ignored
		q := randomVectors(rng, 1, 16)[0]
		res, err := r.Search(txn, q, SearchOptions{Count: 10, Ef: 100, Candidates: cands})
		if err != nil {
			t.Fatal(err)
		}
		if len(res) != min(10, size) {
			t.Fatalf("%d candidates: %d results", size, len(res))
		}
		sub := map[uint32][]byte{}
		for it := cands.Iterator(); it.HasNext(); {
			if id := it.Next(); id < 3000 {
				sub[id] = enc[id]
			}
		}
		want := exactNeighbours(Euclidean, sub, q, 10)
		for _, x := range res {
			if !cands.Contains(x.ID) {
				t.Fatalf("result %d is not a candidate", x.ID)
			}
		}
		if size < DefaultLinearBelow && res[0].ID != want[0].id {
			t.Fatalf("linear scan: got %v, want %v", res[0], want[0])
		}
	}
}

func TestReaderErrors(t *testing.T) {
	env, db := testDB(t)
	txn, _ := env.BeginRead()
	if _, err := OpenReader(txn, db, 0, Euclidean); !errors.Is(err, ErrMissingMetadata) {
		t.Fatalf("missing metadata: %v", err)
	}
	txn.Abort()
	buildItems(t, env, db, 0, Euclidean, 3, map[uint32][]float32{1: {1, 2, 3}}, BuildOptions{})
	txn, _ = env.BeginRead()
	var me *MetricError
	if _, err := OpenReader(txn, db, 0, Cosine); !errors.As(err, &me) || !errors.Is(err, ErrMetricMismatch) {
		t.Fatalf("metric mismatch: %v", err)
	}
	r, err := OpenReader(txn, db, 0, Euclidean)
	if err != nil {
		t.Fatal(err)
	}
	var de *DimensionError
	if _, err := r.Search(txn, []float32{1, 2}, SearchOptions{Count: 1}); !errors.As(err, &de) || de.Expected != 3 || de.Received != 2 {
		t.Fatalf("dimensions: %v", err)
	}
	if _, err := r.Search(txn, []float32{1, 2, 3}, SearchOptions{Count: 0}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("count 0: %v", err)
	}
	txn.Abort()
	update(t, env, func(txn *WriteTxn) error {
		w, _ := NewWriter(txn, db, 0, 3, Euclidean)
		return w.AddItem(txn, 2, []float32{3, 2, 1})
	})
	txn, _ = env.BeginRead()
	defer txn.Abort()
	if _, err := OpenReader(txn, db, 0, Euclidean); !errors.Is(err, ErrNeedBuild) {
		t.Fatalf("pending build: %v", err)
	}
}

func TestWriterErrors(t *testing.T) {
	env, db := testDB(t)
	buildItems(t, env, db, 0, Euclidean, 3, map[uint32][]float32{1: {1, 2, 3}}, BuildOptions{})
	err := env.Update(func(txn *WriteTxn) error {
		if _, err := NewWriter(txn, db, 0, 4, Euclidean); !errors.Is(err, ErrDimensions) {
			t.Errorf("writer with other dimensions: %v", err)
		}
		if _, err := NewWriter(txn, db, 0, 3, Manhattan); !errors.Is(err, ErrMetricMismatch) {
			t.Errorf("writer with other metric: %v", err)
		}
		w, _ := NewWriter(txn, db, 0, 3, Euclidean)
		nan := float32(math.NaN())
		for _, bad := range [][]float32{{1, 2}, {1, nan, 3}, {float32(math.Inf(1)), 0, 0}} {
			if err := w.AddItems(txn, []uint32{5, 6}, append([]float32{0, 0, 0}, bad...)); err == nil {
				t.Errorf("bad vector %v accepted", bad)
			}
		}
		// Nothing of a rejected batch was written.
		if ok, _ := w.Contains(txn, 5); ok {
			t.Errorf("a rejected batch wrote item 5")
		}
		for _, bad := range []BuildOptions{{M: 1}, {M: 8, M0: 4}, {EfConstruction: -1}} {
			if err := w.Build(context.Background(), txn, bad); !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("options %+v: %v", bad, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestBuildCancelLeavesLastCommit(t *testing.T) {
	env, db := testDB(t)
	rng := rand.New(rand.NewPCG(11, 12))
	first := randomVectors(rng, 200, 16)
	buildItems(t, env, db, 0, Euclidean, 16, first, BuildOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := env.Update(func(txn *WriteTxn) error {
		w, _ := NewWriter(txn, db, 0, 16, Euclidean)
		for id, v := range randomVectors(rng, 3000, 16) {
			if err := w.AddItem(txn, id+1000, v); err != nil {
				return err
			}
		}
		w.DelItem(txn, 3)
		return w.Build(ctx, txn, BuildOptions{})
	})
	if !errors.Is(err, ErrCancelled) {
		t.Fatalf("cancelled build: %v", err)
	}
	r, txn := openReader(t, env, db, 0, Euclidean)
	if r.Len() != 200 || !r.Contains(3) || r.Contains(1000) {
		t.Fatalf("after a cancelled build: %d items", r.Len())
	}
	got, _, _ := r.ItemVector(txn, 3)
	if !slices.Equal(got, first[3]) {
		t.Fatal("item 3 changed")
	}
}

func TestTwoBuildsInOneTransaction(t *testing.T) {
	env, db := testDB(t)
	rng := rand.New(rand.NewPCG(13, 14))
	vecs := randomVectors(rng, 600, 8)
	opts := BuildOptions{M: 5, EfConstruction: 30}
	buildItems(t, env, db, 0, Euclidean, 8, vecs, opts)
	update(t, env, func(txn *WriteTxn) error {
		w, _ := NewWriter(txn, db, 0, 8, Euclidean)
		for round := 0; round < 3; round++ {
			for i := 0; i < 50; i++ {
				id := uint32(rng.IntN(800))
				if i%3 == 0 {
					w.DelItem(txn, id)
					delete(vecs, id)
				} else {
					v := randomVectors(rng, 1, 8)[0]
					w.AddItem(txn, id, v)
					vecs[id] = v
				}
			}
			if err := w.Build(context.Background(), txn, opts); err != nil {
				return err
			}
		}
		return nil
	})
	checkGraph(t, env, db, 0, opts)
	allReachable(t, env, db, 0, Euclidean, 8)
	r, _ := openReader(t, env, db, 0, Euclidean)
	if r.Len() != uint64(len(vecs)) {
		t.Fatalf("%d items, want %d", r.Len(), len(vecs))
	}
}

func TestBuildWithoutChangesIsANoOp(t *testing.T) {
	env, db := testDB(t)
	buildItems(t, env, db, 0, Euclidean, 4, randomVectors(rand.New(rand.NewPCG(1, 1)), 300, 4), BuildOptions{})
	before := dumpAll(t, env, db)
	var idBefore, idAfter uintptr
	env.View(func(txn *ReadTxn) error { idBefore = txn.ID(); return nil })
	update(t, env, func(txn *WriteTxn) error {
		w, _ := NewWriter(txn, db, 0, 4, Euclidean)
		return w.Build(context.Background(), txn, BuildOptions{})
	})
	env.View(func(txn *ReadTxn) error { idAfter = txn.ID(); return nil })
	// LMDB does not even write a commit without changes.
	if idAfter != idBefore {
		t.Fatalf("a build without changes wrote a commit (%d -> %d)", idBefore, idAfter)
	}
	if after := dumpAll(t, env, db); len(after) != len(before) {
		t.Fatal("a build without changes changed the database")
	}
}

// dumpAll returns every key and value of the database, for byte comparisons.
func dumpAll(t *testing.T, env *Env, db *Database) [][2][]byte {
	t.Helper()
	var out [][2][]byte
	env.View(func(txn *ReadTxn) error {
		cur, _ := txn.txn.OpenCursor(db.dbi)
		defer cur.Close()
		for k, v, err := cur.Get(nil, nil, lmdb.First); err == nil; k, v, err = cur.Get(nil, nil, lmdb.Next) {
			out = append(out, [2][]byte{bytes.Clone(k), bytes.Clone(v)})
		}
		return nil
	})
	return out
}

func TestReproducibleBuild(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	vecs := randomVectors(rng, 500, 10)
	more := randomVectors(rng, 100, 10)
	var dumps [2][][2][]byte
	for i := range dumps {
		env, db := testDB(t)
		opts := BuildOptions{Threads: 1, Seed: 99, M: 6}
		buildItems(t, env, db, 0, Cosine, 10, vecs, opts)
		shifted := map[uint32][]float32{}
		for id, v := range more {
			shifted[id+450] = v
		}
		buildItems(t, env, db, 0, Cosine, 10, shifted, opts)
		dumps[i] = dumpAll(t, env, db)
	}
	if len(dumps[0]) != len(dumps[1]) {
		t.Fatalf("%d vs %d entries", len(dumps[0]), len(dumps[1]))
	}
	for i := range dumps[0] {
		if !bytes.Equal(dumps[0][i][0], dumps[1][i][0]) || !bytes.Equal(dumps[0][i][1], dumps[1][i][1]) {
			t.Fatalf("entry %d differs: %x", i, dumps[0][i][0])
		}
	}
}

func TestLevelDistribution(t *testing.T) {
	d := newLevelDrawer(DefaultSeed, 16)
	if d.maxLevel != 7 {
		t.Fatalf("M=16 allows levels 0..%d, the reference 0..7", d.maxLevel)
	}
	counts := make([]int, 8)
	for id := uint32(0); id < 1_000_000; id++ {
		counts[d.level(id)]++
	}
	// P(level >= 1) = 1/16.
	if up := 1_000_000 - counts[0]; up < 60000 || up > 65000 {
		t.Fatalf("items above layer 0: %d, expected about 62500", up)
	}
}

func TestSnapshotReaderBatchMatchesSingle(t *testing.T) {
	env, db := testDB(t)
	rng := rand.New(rand.NewPCG(17, 18))
	vecs := randomVectors(rng, 2000, 24)
	buildItems(t, env, db, 0, Manhattan, 24, vecs, BuildOptions{})
	snap, err := env.OpenSnapshot(3)
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	r, err := OpenSnapshotReader(snap, db, 0, Manhattan)
	if err != nil {
		t.Fatal(err)
	}
	const nq = 64
	queries := make([]float32, 0, nq*24)
	for i := 0; i < nq; i++ {
		queries = append(queries, randomVectors(rng, 1, 24)[0]...)
	}
	got := make([][]Result, nq)
	opts := SearchOptions{Count: 7, Ef: 50}
	if err := r.SearchBatch(snap, queries, nq, opts, 3, func(i int, res []Result) { got[i] = res }); err != nil {
		t.Fatal(err)
	}
	txn, _ := snap.Acquire()
	defer snap.Release(txn)
	for i := 0; i < nq; i++ {
		want, err := r.Search(txn, queries[i*24:(i+1)*24], opts)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got[i], want) {
			t.Fatalf("query %d: batch %v, single %v", i, got[i], want)
		}
	}
	items := []uint32{0, 5, 99999}
	err = r.SearchItemBatch(snap, items, opts, 2, func(i int, res []Result, found bool) {
		if found != (items[i] < 2000) || (found && len(res) != 7) {
			t.Errorf("item %d: found %v, %d results", items[i], found, len(res))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}
