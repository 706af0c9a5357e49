package core

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// Benchmarks on real data: Fashion-MNIST images (784 dimensions, euclidean). They use the
// first 20,000 training images of ../shared/data when that folder is there, else the
// repository's 10,000 images plus their mirror images.

func benchData(b *testing.B, n int) [][]float32 {
	b.Helper()
	shared := filepath.Join("..", "..", "shared", "data", "fashion-mnist", "train-images-idx3-ubyte.gz")
	if _, err := os.Stat(shared); err == nil {
		rel, _ := filepath.Rel(filepath.Join("..", "testdata", "fashion-mnist"), shared)
		return loadIDX(b, rel, n)
	}
	rows := loadIDX(b, "train-images-10k-idx3-ubyte.gz", n)
	for i := 0; len(rows) < n; i++ {
		m := make([]float32, 784)
		for y := 0; y < 28; y++ {
			for x := 0; x < 28; x++ {
				m[y*28+x] = rows[i][y*28+27-x]
			}
		}
		rows = append(rows, m)
	}
	return rows
}

func addAndBuild(b *testing.B, env *Env, db *Database, rows [][]float32, first int, opts BuildOptions) {
	b.Helper()
	err := env.Update(func(txn *WriteTxn) error {
		w, err := NewWriter(txn, db, 0, 784, Euclidean)
		if err != nil {
			return err
		}
		for i, v := range rows {
			if err := w.AddItem(txn, uint32(first+i), v); err != nil {
				return err
			}
		}
		return w.Build(context.Background(), txn, opts)
	})
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkBuild is a full build of 10,000 images with 1 thread and with every core, and of
// 20,000 images (the base of BenchmarkIncrementalBuild) with every core.
func BenchmarkBuild(b *testing.B) {
	rows := benchData(b, 20000)
	for _, c := range []struct{ n, threads int }{{10000, 1}, {10000, threads()}, {20000, threads()}} {
		b.Run("n="+itoa(c.n)+"/threads="+itoa(c.threads), func(b *testing.B) {
			for b.Loop() {
				env, db := testDB(b)
				addAndBuild(b, env, db, rows[:c.n], 0, BuildOptions{M: 16, EfConstruction: 96, Threads: c.threads})
				env.Close()
			}
		})
	}
}

// BenchmarkIncrementalBuild adds 1% new items (200) to a built 20,000-item index.
func BenchmarkIncrementalBuild(b *testing.B) {
	rows := benchData(b, 20200)
	env, db := testDB(b)
	opts := BuildOptions{M: 16, EfConstruction: 96}
	addAndBuild(b, env, db, rows[:20000], 0, opts)
	for b.Loop() {
		// Each iteration adds the same 200 items in a transaction that is then aborted, so
		// every iteration measures the same change.
		var err error
		runtimeLocked(func() {
			var txn *WriteTxn
			if txn, err = env.BeginWrite(); err != nil {
				return
			}
			defer txn.Abort()
			w, _ := NewWriter(txn, db, 0, 784, Euclidean)
			for i, v := range rows[20000:] {
				w.AddItem(txn, uint32(20000+i), v)
			}
			err = w.Build(context.Background(), txn, opts)
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSearch is one query (k=10) on a 10,000-image index, at several ef_search.
func BenchmarkSearch(b *testing.B) {
	rows := benchData(b, 10000)
	queries := loadIDX(b, "t10k-images-500-idx3-ubyte.gz", 500)
	env, db := testDB(b)
	addAndBuild(b, env, db, rows, 0, BuildOptions{M: 16, EfConstruction: 96})
	snap, err := env.OpenSnapshot(threads())
	if err != nil {
		b.Fatal(err)
	}
	defer snap.Close()
	r, err := OpenSnapshotReader(snap, db, 0, Euclidean)
	if err != nil {
		b.Fatal(err)
	}
	txn, _ := snap.Acquire()
	defer snap.Release(txn)
	rng := rand.New(rand.NewPCG(1, 1))
	for _, ef := range []int{10, 40, 200} {
		b.Run("ef="+itoa(ef), func(b *testing.B) {
			for b.Loop() {
				if _, err := r.Search(txn, queries[rng.IntN(len(queries))], SearchOptions{Count: 10, Ef: ef}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
