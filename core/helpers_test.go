package core

import (
	"compress/gzip"
	"context"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"testing"
)

// testDB opens a fresh environment with its unnamed database.
func testDB(t testing.TB) (*Env, *Database) {
	t.Helper()
	env, err := OpenEnv(t.TempDir(), Options{MapSize: 1 << 32})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Close() })
	db, err := env.OpenDatabase("", true)
	if err != nil {
		t.Fatal(err)
	}
	return env, db
}

// update runs fn in a committed write transaction, failing the test on error.
func update(t testing.TB, env *Env, fn func(*WriteTxn) error) {
	t.Helper()
	if err := env.Update(fn); err != nil {
		t.Fatal(err)
	}
}

// buildItems adds vecs (ids from their keys) to index and builds, in one transaction.
func buildItems(t testing.TB, env *Env, db *Database, index uint16, metric Metric, dims int, vecs map[uint32][]float32, opts BuildOptions) {
	t.Helper()
	update(t, env, func(txn *WriteTxn) error {
		w, err := NewWriter(txn, db, index, dims, metric)
		if err != nil {
			return err
		}
		ids := make([]uint32, 0, len(vecs))
		for id := range vecs {
			ids = append(ids, id)
		}
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
		for _, id := range ids {
			if err := w.AddItem(txn, id, vecs[id]); err != nil {
				return err
			}
		}
		return w.Build(context.Background(), txn, opts)
	})
}

// openReader opens a reader and its transaction, closed at the end of the test.
func openReader(t testing.TB, env *Env, db *Database, index uint16, metric Metric) (*Reader, *ReadTxn) {
	t.Helper()
	txn, err := env.BeginRead()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(txn.Abort)
	r, err := OpenReader(txn, db, index, metric)
	if err != nil {
		t.Fatal(err)
	}
	return r, txn
}

func randomVectors(rng *rand.Rand, n, dims int) map[uint32][]float32 {
	out := make(map[uint32][]float32, n)
	for i := 0; i < n; i++ {
		v := make([]float32, dims)
		for j := range v {
			v[j] = rng.Float32()*2 - 1
		}
		out[uint32(i)] = v
	}
	return out
}

// loadIDX reads a gzip IDX image file of the repository's Fashion-MNIST subset as float32 rows.
func loadIDX(t testing.TB, name string, n int) [][]float32 {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "testdata", "fashion-mnist", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if binary.BigEndian.Uint32(data) != 2051 {
		t.Fatalf("%s: not an IDX image file", name)
	}
	count := int(binary.BigEndian.Uint32(data[4:]))
	dims := int(binary.BigEndian.Uint32(data[8:]) * binary.BigEndian.Uint32(data[12:]))
	n = min(n, count)
	rows := make([][]float32, n)
	for i := range rows {
		rows[i] = make([]float32, dims)
		for j, b := range data[16+i*dims : 16+(i+1)*dims] {
			rows[i][j] = float32(b)
		}
	}
	return rows
}

// encodeAll encodes every vector as an item value, for brute-force searches.
func encodeAll(metric Metric, vecs map[uint32][]float32) map[uint32][]byte {
	out := make(map[uint32][]byte, len(vecs))
	for id, v := range vecs {
		out[id] = metric.appendValue(nil, v)
	}
	return out
}

// exactNeighbours computes the k nearest items of query among enc by brute force.
func exactNeighbours(metric Metric, enc map[uint32][]byte, query []float32, k int) []scored {
	q := metric.appendValue(nil, query)
	all := make([]scored, 0, len(enc))
	for id, v := range enc {
		all = append(all, scored{metric.distance(q, v), id})
	}
	sort.Slice(all, func(i, j int) bool { return before(all[i], all[j]) })
	return all[:min(k, len(all))]
}

// recallAt computes recall@k of the reader over queries against brute force on vecs.
func recallAt(t testing.TB, r *Reader, txn Txn, metric Metric, vecs map[uint32][]float32, queries [][]float32, k, ef int) float64 {
	t.Helper()
	enc := encodeAll(metric, vecs)
	hits, total := 0, 0
	for _, q := range queries {
		want := exactNeighbours(metric, enc, q, k)
		got, err := r.Search(txn, q, SearchOptions{Count: k, Ef: ef})
		if err != nil {
			t.Fatal(err)
		}
		set := map[uint32]bool{}
		for _, g := range got {
			set[g.ID] = true
		}
		for _, w := range want {
			if set[w.id] {
				hits++
			}
		}
		total += len(want)
	}
	return float64(hits) / float64(total)
}

func threads() int { return runtime.GOMAXPROCS(0) }
