package core

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/PowerDNS/lmdb-go/lmdb"
)

// FuzzVerify feeds damaged copies of a small database to Verify, which must never panic; a file
// it accepts is then opened with LMDB, every key and value of every database read and the index
// searched: a fault there (the fuzzing process dying) is a page Verify should have refused.
func FuzzVerify(f *testing.F) {
	dir := f.TempDir()
	env, err := OpenEnv(dir, Options{MapSize: 1 << 24})
	if err != nil {
		f.Fatal(err)
	}
	db, err := env.OpenDatabase("", true)
	if err != nil {
		f.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(9, 10))
	buildItems(f, env, db, 0, Euclidean, 4, randomVectors(rng, 40, 4), BuildOptions{})
	big, err := env.OpenDatabase("big", true)
	if err != nil {
		f.Fatal(err)
	}
	buildItems(f, env, big, 1, Euclidean, 1100, randomVectors(rng, 2, 1100), BuildOptions{}) // overflow pages
	env.Close()
	seed, err := os.ReadFile(filepath.Join(dir, "data.mdb"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "data.mdb"), b, 0o644); err != nil {
			t.Fatal(err)
		}
		rep, err := Verify(dir)
		if err != nil {
			return
		}
		env, err := OpenEnv(dir, Options{MapSize: 1 << 24})
		if err != nil {
			return
		}
		defer env.Close()
		for _, d := range rep.Databases {
			db, err := env.OpenDatabase(d.Name, false)
			if err != nil {
				continue
			}
			_ = env.View(func(txn *ReadTxn) error {
				cur, err := txn.LMDB().OpenCursor(db.dbi)
				if err != nil {
					return err
				}
				defer cur.Close()
				sum := byte(0)
				for op := uint(lmdb.First); ; op = lmdb.Next {
					k, v, err := cur.Get(nil, nil, op)
					if err != nil {
						break
					}
					for _, x := range k {
						sum ^= x
					}
					for _, x := range v {
						sum ^= x
					}
				}
				_ = sum
				for _, index := range []uint16{0, 1} {
					for _, m := range []Metric{Euclidean, Cosine} {
						if r, err := OpenReader(txn, db, index, m); err == nil {
							_, _ = r.Search(txn, make([]float32, r.Dimensions()), SearchOptions{Count: 5, Ef: 10})
						}
					}
				}
				return nil
			})
		}
	})
}
