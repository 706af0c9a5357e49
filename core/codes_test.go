package core

import (
	"bytes"
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"unsafe"

	"github.com/RoaringBitmap/roaring/v2"
)

// clustered returns n vectors around 16 centres, like real embeddings.
func clustered(rng *rand.Rand, n, dims int) map[uint32][]float32 {
	centres := make([][]float32, 16)
	for i := range centres {
		centres[i] = make([]float32, dims)
		for d := range centres[i] {
			centres[i][d] = float32(rng.NormFloat64() * 3)
		}
	}
	out := make(map[uint32][]float32, n)
	for i := 0; i < n; i++ {
		c := centres[rng.IntN(len(centres))]
		v := make([]float32, dims)
		for d := range v {
			v[d] = c[d] + float32(rng.NormFloat64())
		}
		out[uint32(i)] = v
	}
	return out
}

// openSnapshotReader opens a snapshot reader with opts, closed at the end of the test.
func openSnapshotReader(t testing.TB, env *Env, db *Database, metric Metric, opts ReaderOptions) (*Reader, *Snapshot) {
	t.Helper()
	snap, err := env.OpenSnapshot(2) // room for a second transaction: scans in two halves
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(snap.Close)
	r, err := OpenSnapshotReaderWith(snap, db, 0, metric, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r, snap
}

func TestCompressedSearchRecallAndExactDistances(t *testing.T) {
	for _, metric := range []Metric{Euclidean, Cosine, Manhattan} {
		t.Run(metric.Name(), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(7, uint64(metric)))
			vecs := clustered(rng, 3000, 48)
			env, db := testDB(t)
			buildItems(t, env, db, 0, metric, 48, vecs, BuildOptions{M: 12, EfConstruction: 64, Seed: 3})
			exact, snapE := openSnapshotReader(t, env, db, metric, ReaderOptions{Mode: ReadMemory})
			comp, snapC := openSnapshotReader(t, env, db, metric, ReaderOptions{Mode: ReadCompressed})
			if comp.Plan().Mode != ReadCompressed || comp.codes == nil || comp.Plan().CodesBytes < 3000*48 {
				t.Fatalf("plan %+v: not compressed", comp.Plan())
			}
			queries := make([][]float32, 0, 100)
			for _, v := range clustered(rng, 100, 48) {
				queries = append(queries, v)
			}
			txnE, _ := snapE.Acquire()
			defer snapE.Release(txnE)
			txnC, _ := snapC.Acquire()
			defer snapC.Release(txnC)
			re := recallAt(t, exact, txnE, metric, vecs, queries, 10, 64)
			rc := recallAt(t, comp, txnC, metric, vecs, queries, 10, 64)
			t.Logf("recall@10 at ef 64: exact walk %.4f, compressed walk %.4f", re, rc)
			if rc < re-0.02 {
				t.Fatalf("compressed recall %.4f, exact %.4f", rc, re)
			}
			// Results carry exact distances, ascending, as an exact reader computes them.
			for _, q := range queries[:20] {
				res, err := comp.Search(txnC, q, SearchOptions{Count: 10, Ef: 64})
				if err != nil {
					t.Fatal(err)
				}
				qv := metric.appendValue(nil, q)
				for i, r := range res {
					want := metric.distance(qv, metric.appendValue(nil, vecs[r.ID]))
					if r.Distance != want {
						t.Fatalf("item %d: distance %v, exact %v", r.ID, r.Distance, want)
					}
					if i > 0 && before(scored{r.Distance, r.ID}, scored{res[i-1].Distance, res[i-1].ID}) {
						t.Fatalf("results out of order: %v", res)
					}
				}
			}
			// By item: never the item itself; filters hold.
			res, found, err := comp.SearchItem(txnC, 5, SearchOptions{Count: 10, Ef: 64})
			if err != nil || !found || len(res) != 10 {
				t.Fatalf("SearchItem: %v %v %v", res, found, err)
			}
			for _, r := range res {
				if r.ID == 5 {
					t.Fatal("SearchItem returned the item itself")
				}
			}
			filter := roaring.New()
			for id := uint32(0); id < 3000; id += 2 {
				filter.Add(id)
			}
			res, err = comp.Search(txnC, queries[0], SearchOptions{Count: 10, Ef: 64, Candidates: filter})
			if err != nil || len(res) != 10 {
				t.Fatalf("filtered: %v %v", res, err)
			}
			for _, r := range res {
				if r.ID%2 != 0 {
					t.Fatalf("filtered search returned %d", r.ID)
				}
			}
		})
	}
}

func TestReadModeFromBudget(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	vecs := clustered(rng, 2000, 32)
	env, db := testDB(t)
	buildItems(t, env, db, 0, Euclidean, 32, vecs, BuildOptions{Seed: 1})
	used, err := env.UsedBytes()
	if err != nil || used < 2000*32*4 {
		t.Fatalf("used bytes %d, %v", used, err)
	}
	// Codes are used when they fit in three quarters of the budget.
	least := (codesBytes(2000, 32, 1999) + 2) / 3 * 4
	cases := []struct {
		budget int64
		want   ReadMode
	}{
		{used, ReadMemory},
		{used - 1, ReadCompressed},
		{least, ReadCompressed},
		{least - 1, ReadDisk},
	}
	for _, c := range cases {
		r, _ := openSnapshotReader(t, env, db, Euclidean, ReaderOptions{MemoryBudget: c.budget})
		p := r.Plan()
		if p.Mode != c.want || p.Budget != c.budget || p.BudgetSource != "explicit" || p.FileBytes != used {
			t.Errorf("budget %d: plan %+v, want mode %v", c.budget, p, c.want)
		}
	}
	// The environment variable sets the budget when none is given.
	t.Setenv(MemoryBudgetEnv, "1K")
	r, _ := openSnapshotReader(t, env, db, Euclidean, ReaderOptions{})
	if p := r.Plan(); p.Budget != 1024 || p.BudgetSource != "environment" || p.Mode != ReadDisk {
		t.Errorf("from the environment: %+v", p)
	}
	// Binary metrics are never compressed: their vectors are one bit a dimension already.
	env2, db2 := testDB(t)
	buildItems(t, env2, db2, 0, Hamming, 32, vecs, BuildOptions{Seed: 1})
	r, _ = openSnapshotReader(t, env2, db2, Hamming, ReaderOptions{MemoryBudget: 1 << 40, Mode: ReadCompressed})
	if p := r.Plan(); p.Mode != ReadDisk {
		t.Errorf("hamming forced compressed: %+v", p)
	}
	if _, err := OpenSnapshotReaderWith(nil, db, 0, Euclidean, ReaderOptions{MemoryBudget: -1}); err == nil {
		t.Error("a negative budget was accepted")
	}
	if e, err := OpenEnv(t.TempDir(), Options{MemoryBudget: -1}); err == nil {
		e.Close()
		t.Error("an environment with a negative budget was opened")
	}
}

func TestParseMemorySize(t *testing.T) {
	good := map[string]int64{"1": 1, "512M": 512 << 20, "2g": 2 << 30, "1GiB": 1 << 30, " 3 K ": 3 << 10, "7KB": 7 << 10, "1T": 1 << 40}
	for s, want := range good {
		if got, err := ParseMemorySize(s); err != nil || got != want {
			t.Errorf("%q: %d %v, want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "0", "-5", "M", "1.5G", "12Q", "99999999999T"} {
		if _, err := ParseMemorySize(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

func TestRecallFashionMNISTCompressed(t *testing.T) {
	vecs, queries := fashion(t)
	env, db := testDB(t)
	buildItems(t, env, db, 0, Euclidean, 784, vecs, fashionOpts)
	r, snap := openSnapshotReader(t, env, db, Euclidean, ReaderOptions{Mode: ReadCompressed})
	txn, _ := snap.Acquire()
	defer snap.Release(txn)
	for _, ef := range []int{40, 200} {
		recall := recallAt(t, r, txn, Euclidean, vecs, queries, 10, ef)
		t.Logf("compressed walk, ef_search %d: recall@10 = %.4f", ef, recall)
		if ef == 200 && recall < recallTarget {
			t.Fatalf("recall@10 = %.4f < %.2f", recall, recallTarget)
		}
	}
}

func TestCompressedLinksPartlyInMemory(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	vecs := clustered(rng, 2000, 16)
	env, db := testDB(t)
	buildItems(t, env, db, 0, Euclidean, 16, vecs, BuildOptions{Seed: 2})
	full, snap := openSnapshotReader(t, env, db, Euclidean, ReaderOptions{Mode: ReadCompressed})
	if full.codes.linksLoaded != 2000 {
		t.Fatalf("%d of 2000 items' links preloaded without a budget", full.codes.linksLoaded)
	}
	part, _ := openSnapshotReader(t, env, db, Euclidean, ReaderOptions{Mode: ReadCompressed})
	txn, _ := snap.Acquire()
	defer snap.Release(txn)
	// Preload again with room for about a third of the lists.
	part.codes.linkEnd, part.codes.linkSegs, part.codes.linkBytes, part.codes.linksLoaded = nil, nil, 0, 0
	budget := int64(4*2000+24) + full.codes.linkBytes/3
	src := codeSource{db: db, metric: Euclidean, dims: 16, items: part.meta.Items, used: 1 << 30}
	if err := part.codes.loadLinks(txn, src, budget); err != nil {
		t.Fatal(err)
	}
	if n := part.codes.linksLoaded; n == 0 || n >= 2000 {
		t.Fatalf("%d of 2000 items' links preloaded with a third of the room", n)
	}
	if b := part.codes.linksBytes(); b > budget {
		t.Fatalf("preloaded links take %d bytes, budget %d", b, budget)
	}
	for id := uint32(0); id < 2000; id += 7 {
		a, _ := full.links(txn, id, 0, nil)
		b, _ := part.links(txn, id, 0, nil)
		if len(a) == 0 || !slicesEqual(a, b) {
			t.Fatalf("item %d: links %v, preloaded %v", id, b, a)
		}
	}
	for id := uint32(0); id < 50; id++ {
		q := vecs[id]
		a, err1 := full.Search(txn, q, SearchOptions{Count: 5, Ef: 32})
		b, err2 := part.Search(txn, q, SearchOptions{Count: 5, Ef: 32})
		if err1 != nil || err2 != nil || len(a) != len(b) {
			t.Fatalf("%v %v", err1, err2)
		}
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("query %d: %v against %v", id, b, a)
			}
		}
	}
}

func slicesEqual(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestBuildWithCodes builds in chunks, the later ones reading the committed items through
// codes (as a build under a memory limit does), with deletions and overwrites, and checks the
// graph and its recall against a build with exact vectors.
func TestBuildWithCodes(t *testing.T) {
	for _, metric := range []Metric{Euclidean, Cosine, Manhattan} {
		t.Run(metric.Name(), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(11, uint64(metric)))
			vecs := clustered(rng, 3000, 32)
			queries := make([][]float32, 0, 100)
			for _, v := range clustered(rng, 100, 32) {
				queries = append(queries, v)
			}
			recall := map[ReadMode]float64{}
			for _, mode := range []ReadMode{ReadMemory, ReadCompressed} {
				env, db := testDB(t)
				progress := &Progress{}
				// One thread: the builds are reproducible, so the comparison cannot flake.
				opts := BuildOptions{M: 12, EfConstruction: 64, Seed: 4, Threads: 1, ReadMode: mode, Progress: progress}
				chunk := func(lo, hi uint32) map[uint32][]float32 {
					m := map[uint32][]float32{}
					for id := lo; id < hi; id++ {
						m[id] = vecs[id]
					}
					return m
				}
				buildItems(t, env, db, 0, metric, 32, chunk(0, 1000), opts)
				buildItems(t, env, db, 0, metric, 32, chunk(1000, 2000), opts)
				buildItems(t, env, db, 0, metric, 32, chunk(2000, 3000), opts)
				// Delete 100 items and overwrite 100 others in one more build.
				update(t, env, func(txn *WriteTxn) error {
					w, err := NewWriter(txn, db, 0, 32, metric)
					if err != nil {
						return err
					}
					for id := uint32(0); id < 3000; id += 30 {
						if _, err := w.DelItem(txn, id); err != nil {
							return err
						}
						if err := w.AddItem(txn, id+1, vecs[id+1]); err != nil {
							return err
						}
					}
					return w.Build(context.Background(), txn, opts)
				})
				if progress.Compressed() != (mode == ReadCompressed) {
					t.Fatalf("mode %v: the build read through codes: %v", mode, progress.Compressed())
				}
				// A build that reads the file in place has it read ahead (from a cold page
				// cache, a page a fault otherwise); one that reads codes has no use for that.
				env.warmMu.Lock()
				warmed := env.warmed
				env.warmMu.Unlock()
				if (warmed > 0) != (mode == ReadMemory) {
					t.Fatalf("mode %v: %d bytes of the file read ahead", mode, warmed)
				}
				checkGraph(t, env, db, 0, opts)
				r, txn := openReader(t, env, db, 0, metric)
				live := map[uint32][]float32{}
				for id, v := range vecs {
					if id%30 != 0 {
						live[id] = v
					}
				}
				recall[mode] = recallAt(t, r, txn, metric, live, queries, 10, 64)
			}
			t.Logf("recall@10 at ef 64: exact build %.4f, build with codes %.4f", recall[ReadMemory], recall[ReadCompressed])
			if recall[ReadCompressed] < recall[ReadMemory]-0.03 {
				t.Fatalf("a build with codes lost recall: %v", recall)
			}
		})
	}
}

// TestCodesWithSparseIDs uses ids spread up to 4e9 (codes then map ids to slots in a hash map)
// in a compressed reader and a build with codes.
func TestCodesWithSparseIDs(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	dense := clustered(rng, 1500, 24)
	vecs := map[uint32][]float32{}
	for id, v := range dense {
		vecs[id*2_500_000+7] = v
	}
	env, db := testDB(t)
	opts := BuildOptions{Seed: 3, Threads: 1, ReadMode: ReadCompressed, Progress: &Progress{}}
	half := map[uint32][]float32{}
	rest := map[uint32][]float32{}
	for id, v := range vecs {
		if (id/2_500_000)%2 == 0 {
			half[id] = v
		} else {
			rest[id] = v
		}
	}
	buildItems(t, env, db, 0, Euclidean, 24, half, opts)
	buildItems(t, env, db, 0, Euclidean, 24, rest, opts)
	if !opts.Progress.Compressed() {
		t.Fatal("the second build did not read through codes")
	}
	checkGraph(t, env, db, 0, opts)
	r, snap := openSnapshotReader(t, env, db, Euclidean, ReaderOptions{Mode: ReadCompressed})
	if r.codes.sparse == nil {
		t.Fatal("sparse ids in a dense table")
	}
	txn, _ := snap.Acquire()
	defer snap.Release(txn)
	checked := 0
	for id, v := range vecs {
		res, err := r.Search(txn, v, SearchOptions{Count: 1, Ef: 64})
		if err != nil || len(res) != 1 || res[0].ID != id || res[0].Distance != 0 {
			t.Fatalf("item %d: %v %v", id, res, err)
		}
		if checked++; checked == 200 {
			break
		}
	}
}

// A build with codes preloads links with half of what its budget leaves beside its own memory
// and the codes, as long as buildCacheFloor of page cache remains: with 300,000 256-d items
// under a quarter of their file + 48 MiB that is every layer-0 list; with GloVe's 399,000 50-d
// words under theirs, none (what is left is too little to share).
func TestBuildLinksBudget(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		budget, reserve, codes, want int64
	}{
		{140 * mib, 24 * mib, 75 * mib, 41 * mib / 2}, // clustered 300,000, chunk 12 of 12
		{400 * mib, 24 * mib, 76 * mib, 150 * mib},
		{68 * mib, 32 * mib, 28 * mib, -8 * mib}, // GloVe, chunk 12 of 12: nothing
		{40 * mib, 10 * mib, 10 * mib, 4 * mib},  // 20 MiB left: all but the floor
		{30 * mib, 24 * mib, 10 * mib, -20 * mib},
	} {
		if got := buildLinksBudget(c.budget, c.reserve, c.codes); got != c.want {
			t.Errorf("buildLinksBudget(%d, %d, %d MiB) = %.1f MiB, want %.1f", c.budget/mib, c.reserve/mib, c.codes/mib,
				float64(got)/mib, float64(c.want)/mib)
		}
	}
}

// A build reads in place what fits once its own memory is set aside, walks codes whenever they
// fit in the budget (a build through too small a page cache never ends), and reads exact
// vectors only when even the codes do not fit, or for binary metrics.
func TestBuildReadMode(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		metric                       Metric
		file, budget, inserts, codes int64
		want                         ReadMode
	}{
		{Euclidean, 100 * mib, 200 * mib, 1000, 10 * mib, ReadMemory},
		{Euclidean, 100 * mib, 120 * mib, 25000, 10 * mib, ReadCompressed}, // fits, but not with 25,000 inserts
		{Euclidean, 500 * mib, 60 * mib, 25000, 55 * mib, ReadCompressed},  // a reader would read the disk
		{Euclidean, 500 * mib, 60 * mib, 0, 61 * mib, ReadDisk},
		{BQEuclidean, 500 * mib, 60 * mib, 0, 10 * mib, ReadDisk},
	} {
		if got := buildReadMode(c.metric, c.file, c.budget, c.inserts, c.codes); got != c.want {
			t.Errorf("buildReadMode(%v, file %d MiB, budget %d MiB, %d inserts, codes %d MiB) = %v, want %v",
				c.metric, c.file/mib, c.budget/mib, c.inserts, c.codes/mib, got, c.want)
		}
	}
	if got := chooseReadMode(Euclidean, 500*mib, 60*mib, 55*mib); got != ReadDisk {
		t.Errorf("a reader with codes over 3/4 of its budget: %v, want disk", got)
	}
}

func TestPackedLinksRoundTrip(t *testing.T) {
	lists := [][]uint32{
		nil,
		{0},
		{7},
		{0, 1, 2, 3},
		{127, 128, 16383, 16384, 1<<21 - 1, 1 << 21, 1<<28 - 1, 1 << 28},
		{1, math.MaxUint32 - 1, math.MaxUint32},
		{math.MaxUint32},
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 200; i++ {
		ids := map[uint32]bool{}
		for j := rng.IntN(40); j > 0; j-- {
			ids[uint32(rng.Uint64N(uint64(1)<<rng.IntN(33)))] = true
		}
		var l []uint32
		for id := range ids {
			l = append(l, id)
		}
		slices.Sort(l)
		lists = append(lists, l)
	}
	for _, l := range lists {
		b := packList(nil, l)
		if got := unpackList([]uint32{42}, b); !slices.Equal(got[1:], l) || got[0] != 42 {
			t.Fatalf("unpackList(packList(%v)) = %v (after the 42 already in dst)", l, got[1:])
		}
	}
	// Neighbours spread over 400,000 ids take about two bytes an id, not four.
	var l []uint32
	for id := uint32(5000); id < 400000; id += 400000 / 32 {
		l = append(l, id)
	}
	if b := packList(nil, l); len(b) > 2*len(l) {
		t.Fatalf("%d ids packed into %d bytes", len(l), len(b))
	}
}

func TestPreloadedLinksAreTheFileLists(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	vecs := clustered(rng, 1500, 8)
	env, db := testDB(t)
	buildItems(t, env, db, 0, Euclidean, 8, vecs, BuildOptions{Seed: 3})
	comp, snap := openSnapshotReader(t, env, db, Euclidean, ReaderOptions{Mode: ReadCompressed})
	plain, ptxn := openReader(t, env, db, 0, Euclidean)
	txn, _ := snap.Acquire()
	defer snap.Release(txn)
	if comp.codes.linksLoaded != 1500 {
		t.Fatalf("%d of 1500 items' links preloaded without a budget", comp.codes.linksLoaded)
	}
	for id := uint32(0); id < 1500; id++ {
		want, err := plain.links(ptxn, id, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := comp.codes.links(comp.codes.slot(id), nil)
		if !ok || !slices.Equal(got, want) {
			t.Fatalf("item %d: preloaded links %v (ok %v), the file has %v", id, got, ok, want)
		}
	}
}

// TestReplaceLinks replaces preloaded lists over several segments, some slots many times, and
// checks every list against a model.
func TestReplaceLinks(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	n := 2*linkSegSlots + 1000
	c := newPackedLists(n)
	model := make([][]uint32, n)
	randomList := func() []uint32 {
		ids := make([]uint32, rng.IntN(40))
		for i := range ids {
			ids[i] = rng.Uint32N(1 << uint(1+rng.IntN(31)))
		}
		slices.Sort(ids)
		return slices.Compact(ids)
	}
	replace := func(slots []int32) {
		slices.Sort(slots)
		slots = slices.Compact(slots)
		lists := make([][]uint32, len(slots))
		for i, s := range slots {
			lists[i] = randomList()
			model[s] = lists[i]
		}
		c.replaceLinks(slots, func(i int) []uint32 { return lists[i] })
	}
	all := make([]int32, n)
	for i := range all {
		all[i] = int32(i)
	}
	replace(all)
	for round := 0; round < 20; round++ {
		var slots []int32
		for k := rng.IntN(500); k > 0; k-- {
			slots = append(slots, rng.Int32N(int32(n)))
		}
		replace(slots)
		var total int64
		for _, seg := range c.linkSegs {
			total += int64(cap(seg))
		}
		if total != c.linkBytes {
			t.Fatalf("round %d: segments take %d bytes, linkBytes says %d", round, total, c.linkBytes)
		}
		for s := range n {
			got, ok := c.links(int32(s), nil)
			if !ok || !slices.Equal(got, model[s]) {
				t.Fatalf("round %d, slot %d: %v, want %v", round, s, got, model[s])
			}
		}
	}
	// A segment is rewritten in its own storage unless its new lists outgrow it.
	before := make([][]byte, len(c.linkSegs))
	copy(before, c.linkSegs)
	replace(all[:len(all)/2])
	for k, seg := range c.linkSegs {
		if moved := unsafe.SliceData(seg) != unsafe.SliceData(before[k]); moved != (len(seg) > cap(before[k])) {
			t.Fatalf("segment %d: moved %v, %d bytes of lists, %d bytes of storage before", k, moved, len(seg), cap(before[k]))
		}
	}
	// Trimming drops whole segments from the end and reads of those slots then miss.
	c.trimLinks(c.linksBytes() - 1)
	if c.linksLoaded != 2*linkSegSlots {
		t.Fatalf("%d slots loaded after trimming one segment", c.linksLoaded)
	}
	if _, ok := c.links(int32(2*linkSegSlots), nil); ok {
		t.Fatal("a trimmed slot still has preloaded links")
	}
	if got, _ := c.links(5, nil); !slices.Equal(got, model[5]) {
		t.Fatalf("slot 5 after trimming: %v, want %v", got, model[5])
	}
}

// TestBuildInBatches inserts through codes in small batches, moving changed lists into the
// preloaded links between batches, and checks that the file is byte for byte the one an
// insertion in one batch writes: lists are sets (pruning breaks ties by id), so where a list
// lives between batches must not change what the build decides.
func TestBuildInBatches(t *testing.T) {
	for _, metric := range []Metric{Euclidean, Cosine} {
		t.Run(metric.Name(), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(23, uint64(metric)))
			vecs := clustered(rng, 3000, 24)
			// At once; in batches of 97; in batches with a part of the lists preloaded (the
			// others stay in the table).
			variants := []struct {
				batch int
				links int64
			}{{0, 0}, {97, 0}, {97, 4*3400 + 24 + 25000}}
			var dumps [3][][2][]byte
			for i, v := range variants {
				batch := v.batch
				env, db := testDB(t)
				progress := &Progress{}
				opts := BuildOptions{M: 8, EfConstruction: 48, Seed: 5, Threads: 1, ReadMode: ReadCompressed,
					Progress: progress, insertBatch: batch, linksLimit: v.links}
				for lo := uint32(0); lo < 3000; lo += 1000 {
					m := map[uint32][]float32{}
					for id := lo; id < lo+1000; id++ {
						m[id] = vecs[id]
					}
					buildItems(t, env, db, 0, metric, 24, m, opts)
				}
				// Deletions and overwrites: repaired lists are in the table when batches begin.
				update(t, env, func(txn *WriteTxn) error {
					w, err := NewWriter(txn, db, 0, 24, metric)
					if err != nil {
						return err
					}
					for id := uint32(0); id < 3000; id += 25 {
						if _, err := w.DelItem(txn, id); err != nil {
							return err
						}
						if err := w.AddItem(txn, id+1, vecs[(id+1500)%3000]); err != nil {
							return err
						}
					}
					for id := uint32(3000); id < 3400; id++ {
						if err := w.AddItem(txn, id, vecs[id-3000]); err != nil {
							return err
						}
					}
					return w.Build(context.Background(), txn, opts)
				})
				if got := progress.flushes.Load(); (got > 0) != (batch > 0) {
					t.Fatalf("batch %d: %d flushes in the last build", batch, got)
				}
				// The last build starts from 3,000 items.
				if got := progress.linkSlots.Load(); (got == 3000) != (v.links == 0) || got == 0 {
					t.Fatalf("variant %d: links of %d of 3000 items preloaded", i, got)
				}
				checkGraph(t, env, db, 0, opts)
				dumps[i] = dumpAll(t, env, db)
			}
			for v := 1; v < len(dumps); v++ {
				if len(dumps[0]) != len(dumps[v]) {
					t.Fatalf("variant %d: %d entries, %d at once", v, len(dumps[v]), len(dumps[0]))
				}
				for i := range dumps[0] {
					if !bytes.Equal(dumps[0][i][0], dumps[v][i][0]) || !bytes.Equal(dumps[0][i][1], dumps[v][i][1]) {
						t.Fatalf("variant %d, entry %d differs: key %x value %x, key %x value %x at once", v, i,
							dumps[v][i][0], dumps[v][i][1], dumps[0][i][0], dumps[0][i][1])
					}
				}
			}
		})
	}
}

// TestCompressedBuildCoolsWarmedFile: a build that reads through codes, after one that warmed
// the file while it fit, takes back the warm-up's read-around advice.
func TestCompressedBuildCoolsWarmedFile(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	vecs := clustered(rng, 1500, 16)
	env, db := testDB(t)
	warmed := func() int64 {
		env.warmMu.Lock()
		defer env.warmMu.Unlock()
		return env.warmed
	}
	for i, mode := range []ReadMode{ReadMemory, ReadMemory, ReadCompressed} {
		m := map[uint32][]float32{}
		for id := uint32(i * 500); id < uint32(i*500+500); id++ {
			m[id] = vecs[id]
		}
		buildItems(t, env, db, 0, Euclidean, 16, m, BuildOptions{Seed: 3, ReadMode: mode})
		if got := warmed(); (got > 0) != (mode == ReadMemory && i > 0) {
			t.Fatalf("build %d (%v): %d bytes advised to be read around", i, mode, got)
		}
	}
	checkGraph(t, env, db, 0, BuildOptions{Seed: 3})
}

// TestBuildInBatchesThreads inserts in batches on two goroutines (run under -race in CI): the
// graph stays valid and its recall that of a build in one batch.
func TestBuildInBatchesThreads(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 42))
	vecs := clustered(rng, 4000, 24)
	var queries [][]float32
	for _, v := range clustered(rng, 100, 24) {
		queries = append(queries, v)
	}
	all := map[uint32][]float32{}
	for id, v := range vecs {
		all[id] = v
	}
	var recall [2]float64
	for i, batch := range []int{0, 64} {
		env, db := testDB(t)
		progress := &Progress{}
		opts := BuildOptions{M: 8, EfConstruction: 48, Seed: 6, Threads: 2, ReadMode: ReadCompressed,
			Progress: progress, insertBatch: batch}
		for lo := uint32(0); lo < 4000; lo += 1000 {
			m := map[uint32][]float32{}
			for id := lo; id < lo+1000; id++ {
				m[id] = vecs[id]
			}
			buildItems(t, env, db, 0, Euclidean, 24, m, opts)
		}
		if got := progress.flushes.Load(); (got > 0) != (batch > 0) {
			t.Fatalf("batch %d: %d flushes in the last build", batch, got)
		}
		checkGraph(t, env, db, 0, opts)
		r, txn := openReader(t, env, db, 0, Euclidean)
		recall[i] = recallAt(t, r, txn, Euclidean, all, queries, 10, 64)
	}
	t.Logf("recall@10 at ef 64: one batch %.4f, batches of 64 %.4f", recall[0], recall[1])
	if recall[1] < recall[0]-0.03 {
		t.Fatalf("recall@10 %.4f in batches against %.4f in one", recall[1], recall[0])
	}
}
