package core

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// links appends the links of item on layer to dst (see neighbours).
func (r *Reader) links(txn Txn, item uint32, layer int, dst []uint32) ([]uint32, error) {
	ids, err := r.neighbours(txn, &searchState{}, item, layer)
	return append(dst, ids...), err
}

// readerKinds opens each kind of reader on index 0 of env: a plain reader, and snapshot
// readers in every read mode the metric allows.
func readerKinds(t *testing.T, env *Env, db *Database, metric Metric) map[string]func() (*Reader, Txn) {
	t.Helper()
	kinds := map[string]func() (*Reader, Txn){
		"plain": func() (*Reader, Txn) { return openReader(t, env, db, 0, metric) },
	}
	modes := []ReadMode{ReadMemory, ReadDisk}
	if metric.quantizable() {
		modes = append(modes, ReadCompressed)
	}
	for _, mode := range modes {
		kinds[mode.String()] = func() (*Reader, Txn) {
			snap, err := env.OpenSnapshot(1)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(snap.Close)
			r, err := OpenSnapshotReaderWith(snap, db, 0, metric, ReaderOptions{Mode: mode})
			if err != nil {
				t.Fatal(err)
			}
			txn, err := snap.Acquire()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { snap.Release(txn) })
			return r, txn
		}
	}
	return kinds
}

// TestSearchAllocationsDoNotGrowWithEf checks that a search allocates a fixed number of times
// (its result), however many items it visits, once the reader's caches are warm.
func TestSearchAllocationsDoNotGrowWithEf(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's sync.Pool drops objects at random")
	}
	for _, metric := range []Metric{Euclidean, Cosine, Hamming} {
		env, db := testDB(t)
		rng := rand.New(rand.NewPCG(5, 6))
		vecs := randomVectors(rng, 3000, 16)
		buildItems(t, env, db, 0, metric, 16, vecs, BuildOptions{Threads: 1})
		for kind, open := range readerKinds(t, env, db, metric) {
			r, txn := open()
			queries := make([][]float32, 20)
			for i := range queries {
				queries[i] = vecs[uint32(rng.IntN(len(vecs)))]
			}
			for _, q := range queries { // warm the caches
				if _, err := r.Search(txn, q, SearchOptions{Count: 10, Ef: 1000}); err != nil {
					t.Fatal(err)
				}
			}
			var first float64
			for i, ef := range []int{10, 100, 1000} {
				n := 0
				allocs := testing.AllocsPerRun(40, func() {
					if _, err := r.Search(txn, queries[n%len(queries)], SearchOptions{Count: 10, Ef: ef}); err != nil {
						t.Fatal(err)
					}
					n++
				})
				if i == 0 {
					first = allocs
				}
				t.Logf("%s %s ef=%d: %.1f allocations a search", metric.Name(), kind, ef, allocs)
				if allocs != first || allocs > 1 {
					t.Errorf("%s reader, %s: %.1f allocations a search at ef %d (%.1f at ef 10)", kind, metric.Name(), allocs, ef, first)
				}
			}
		}
	}
}

// TestReadersAgree checks that the caches of snapshot readers (vector refs, packed layer-0
// links, the visited bitset) change no result: memory and disk readers return what a plain
// reader returns, for dense ids, sparse ids (hash tables) and after deletions, by vector, by
// item and through a filter.
func TestReadersAgree(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, c := range []struct {
		name   string
		spread uint32 // ids are i*spread (1: dense)
		del    int    // items deleted after the first build
	}{{"dense", 1, 0}, {"sparse", 1_000_003, 0}, {"dense-deleted", 1, 300}, {"sparse-deleted", 999_983, 300}} {
		t.Run(c.name, func(t *testing.T) {
			env, db := testDB(t)
			vecs := map[uint32][]float32{}
			for i, v := range randomVectors(rng, 1500, 8) {
				vecs[i*c.spread] = v
			}
			buildItems(t, env, db, 0, Cosine, 8, vecs, BuildOptions{Threads: 1})
			if c.del > 0 {
				update(t, env, func(txn *WriteTxn) error {
					w, err := NewWriter(txn, db, 0, 8, Cosine)
					if err != nil {
						return err
					}
					for i := 0; i < c.del; i++ {
						if _, err := w.DelItem(txn, uint32(3*i)*c.spread); err != nil {
							return err
						}
					}
					return w.Build(t.Context(), txn, BuildOptions{Threads: 1})
				})
			}
			kinds := readerKinds(t, env, db, Cosine)
			want, wtxn := kinds["plain"]()
			filter := want.ItemIDs().Clone()
			for id := range vecs {
				if id%(7*c.spread) == 0 {
					filter.Remove(id)
				}
			}
			for _, kind := range []string{"memory", "disk"} {
				r, txn := kinds[kind]()
				for i := 0; i < 60; i++ {
					q := randomVectors(rng, 1, 8)[0]
					item := uint32(rng.IntN(1500)) * c.spread
					for _, opts := range []SearchOptions{{Count: 10, Ef: 10}, {Count: 5, Ef: 200}, {Count: 10, Ef: 40, Candidates: filter}} {
						a, err1 := want.Search(wtxn, q, opts)
						b, err2 := r.Search(txn, q, opts)
						if err1 != nil || err2 != nil || !slices.Equal(a, b) {
							t.Fatalf("%s reader, query %d, %+v: %v (%v), plain reader %v (%v)", kind, i, opts, b, err2, a, err1)
						}
						a, f1, err1 := want.SearchItem(wtxn, item, opts)
						b, f2, err2 := r.SearchItem(txn, item, opts)
						if err1 != nil || err2 != nil || f1 != f2 || !slices.Equal(a, b) {
							t.Fatalf("%s reader, item %d, %+v: %v %v (%v), plain reader %v %v (%v)", kind, item, opts, b, f2, err2, a, f1, err1)
						}
					}
				}
			}
		})
	}
}

// TestVisitedIDs checks the reader's visited set against a map, for ids below its bitset's
// bound and beyond, across resets.
func TestVisitedIDs(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, maxID := range []uint32{0, 63, 64, 1000, 1 << 20} {
		s := newVisitedIDs(maxID, uint64(maxID)+1)
		for round := 0; round < 5; round++ {
			s.reset()
			seen := map[uint32]bool{}
			for i := 0; i < 3000; i++ {
				id := uint32(rng.IntN(int(maxID) + 200))
				if i%10 == 0 {
					id = rng.Uint32()
				}
				if got := s.insert(id); got == seen[id] {
					t.Fatalf("max %d, round %d: insert(%d) = %v, already seen: %v", maxID, round, id, got, seen[id])
				}
				seen[id] = true
				if probe := uint32(rng.IntN(int(maxID) + 200)); s.contains(probe) != seen[probe] {
					t.Fatalf("max %d, round %d: contains(%d) = %v", maxID, round, probe, !seen[probe])
				}
			}
		}
	}
}
