package core

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// verifyFixture builds a database with an index in the unnamed database, one in a named
// database, overflow values (784-d vectors), and free pages (an index rebuilt after deletes),
// closes it and returns its directory.
func verifyFixture(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	env, err := OpenEnv(dir, Options{MapSize: 1 << 28})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	main, err := env.OpenDatabase("", true)
	if err != nil {
		t.Fatal(err)
	}
	buildItems(t, env, main, 0, Euclidean, 784, randomVectors(rng, 60, 784), BuildOptions{})
	named, err := env.OpenDatabase("second", true)
	if err != nil {
		t.Fatal(err)
	}
	buildItems(t, env, named, 3, Cosine, 16, randomVectors(rng, 300, 16), BuildOptions{})
	update(t, env, func(txn *WriteTxn) error {
		w, err := NewWriter(txn, named, 3, 16, Cosine)
		if err != nil {
			return err
		}
		for id := uint32(0); id < 100; id++ {
			if _, err := w.DelItem(txn, id); err != nil {
				return err
			}
		}
		return w.Build(t.Context(), txn, BuildOptions{})
	})
	env.Close()
	return dir
}

func TestVerifySoundDatabase(t *testing.T) {
	dir := verifyFixture(t)
	rep, err := Verify(dir)
	if err != nil {
		t.Fatal(err)
	}
	env, err := OpenEnv(dir, Options{MapSize: 1 << 28})
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	st, err := env.LMDB().Stat()
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Databases) != 2 || rep.Databases[0].Name != "" || rep.Databases[1].Name != "second" {
		t.Fatalf("databases %+v", rep.Databases)
	}
	if rep.Databases[0].Entries != st.Entries-1 || rep.Databases[0].Depth != int(st.Depth) {
		t.Fatalf("unnamed database %+v, LMDB says %d entries (one is the named record), depth %d", rep.Databases[0], st.Entries, st.Depth)
	}
	if rep.OverflowPages < 60 {
		t.Fatalf("%d overflow pages for 60 vectors of 3 KiB", rep.OverflowPages)
	}
	if rep.FreePages == 0 {
		t.Fatal("no free pages after a rebuild")
	}
	if used := 2 + rep.BranchPages + rep.LeafPages + rep.OverflowPages + rep.FreePages; used > rep.LastPage+1 {
		t.Fatalf("%d pages accounted for, but the last page is %d", used, rep.LastPage)
	}
	if rep.LastPage >= rep.FilePages || rep.PageSize != os.Getpagesize() {
		t.Fatalf("report %+v", rep)
	}
}

// pageOf finds the first page of the file whose header says it is of kind flags.
func pageOf(t *testing.T, data []byte, ps int, flags uint16) int {
	t.Helper()
	for p := 2; p < len(data)/ps; p++ {
		if binary.LittleEndian.Uint64(data[p*ps:]) == uint64(p) && binary.LittleEndian.Uint16(data[p*ps+10:])&lmdbPageKinds == flags {
			return p
		}
	}
	t.Fatalf("no page of kind %#x", flags)
	return 0
}

// Each damage that would make LMDB read outside a page or the file is found.
func TestVerifyFindsDamage(t *testing.T) {
	dir := verifyFixture(t)
	file := filepath.Join(dir, "data.mdb")
	pristine, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	ps := os.Getpagesize()
	le := binary.LittleEndian
	rep, err := Verify(dir)
	if err != nil {
		t.Fatal(err)
	}
	node0 := func(b []byte, p int) int { return p*ps + int(le.Uint16(b[p*ps+lmdbPageHeader:])) }
	cases := map[string]func(b []byte){
		"branch child beyond the last page": func(b []byte) {
			n := node0(b, pageOf(t, b, ps, lmdbBranch))
			le.PutUint16(b[n:], 0xFFFF)
			le.PutUint16(b[n+2:], 0xFFFF)
		},
		"node offset outside the page": func(b []byte) {
			p := pageOf(t, b, ps, lmdbLeaf)
			le.PutUint16(b[p*ps+lmdbPageHeader:], uint16(ps-4))
		},
		"leaf value larger than its page": func(b []byte) {
			n := node0(b, pageOf(t, b, ps, lmdbLeaf))
			le.PutUint16(b[n+2:], 0x7FFF)
		},
		"key larger than LMDB allows": func(b []byte) {
			n := node0(b, pageOf(t, b, ps, lmdbLeaf))
			le.PutUint16(b[n+6:], 4000)
		},
		"free space bounds crossed": func(b []byte) {
			p := pageOf(t, b, ps, lmdbLeaf)
			le.PutUint16(b[p*ps+12:], uint16(ps))
		},
		"overflow page count past the file": func(b []byte) {
			p := pageOf(t, b, ps, lmdbOverflow)
			le.PutUint32(b[p*ps+12:], 1<<30)
		},
		"page number in a header": func(b []byte) {
			p := pageOf(t, b, ps, lmdbLeaf)
			le.PutUint64(b[p*ps:], 12345678)
		},
		"page kind": func(b []byte) {
			p := pageOf(t, b, ps, lmdbBranch)
			le.PutUint16(b[p*ps+10:], lmdbLeaf)
		},
		"root of the newest meta page": func(b []byte) {
			m := 0
			if le.Uint64(b[ps+lmdbPageHeader+128:]) > le.Uint64(b[lmdbPageHeader+128:]) {
				m = ps
			}
			// the main database's root: another page in use (reached twice)
			le.PutUint64(b[m+lmdbPageHeader+24+48+40:], 2)
		},
		"entry count of the main database": func(b []byte) {
			m := 0
			if le.Uint64(b[ps+lmdbPageHeader+128:]) > le.Uint64(b[lmdbPageHeader+128:]) {
				m = ps
			}
			le.PutUint64(b[m+lmdbPageHeader+24+48+32:], 1)
		},
		// Found by FuzzVerify: an older meta page given the largest transaction id is the one
		// Verify would walk, but LMDB reads the page the id's parity names: the other one.
		"transaction id in the wrong meta page": func(b []byte) {
			m0, m1 := le.Uint64(b[lmdbPageHeader+128:]), le.Uint64(b[ps+lmdbPageHeader+128:])
			older, id := 0, max(m0, m1)+1
			if m1 < m0 {
				older = ps
			}
			if uint64(older/ps) == id&1 {
				id++
			}
			le.PutUint64(b[older+lmdbPageHeader+128:], id)
		},
		"database flags (DUPSORT)": func(b []byte) {
			m := 0
			if le.Uint64(b[ps+lmdbPageHeader+128:]) > le.Uint64(b[lmdbPageHeader+128:]) {
				m = ps
			}
			le.PutUint16(b[m+lmdbPageHeader+24+48+4:], 0x04)
		},
	}
	if rep.FreePages == 0 {
		t.Fatal("fixture without free pages")
	}
	for name, damage := range cases {
		t.Run(name, func(t *testing.T) {
			b := append([]byte(nil), pristine...)
			damage(b)
			if err := os.WriteFile(file, b, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Verify(dir)
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNotDatabase) {
				t.Fatalf("expected a corruption error, got %v", err)
			}
		})
	}
	if err := os.WriteFile(file, pristine, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(dir); err != nil {
		t.Fatalf("the pristine file again: %v", err)
	}
}

func TestVerifyNotADatabase(t *testing.T) {
	dir := t.TempDir()
	if _, err := Verify(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("no data.mdb: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data.mdb"), []byte("hello, not lmdb at all, really not"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(dir); !errors.Is(err, ErrNotDatabase) {
		t.Fatalf("garbage: %v", err)
	}
}

// Commits landing while Verify reads (and reusing the pages it reads) never make it report
// damage: it walks again, or says the file kept changing.
func TestVerifyWhileWriting(t *testing.T) {
	dir := t.TempDir()
	env, err := OpenEnv(dir, Options{MapSize: 1 << 28})
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	db, err := env.OpenDatabase("", true)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 8))
	items := 20000
	if raceEnabled { // the race detector slows the build tenfold
		items = 2000
	}
	buildItems(t, env, db, 0, Euclidean, 16, randomVectors(rng, items, 16), BuildOptions{})
	var commits atomic.Int64
	stop := make(chan struct{})
	done := make(chan error)
	go func() {
		r := rand.New(rand.NewPCG(9, 9))
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			// Overwrite scattered vectors without building: every commit copies and frees pages.
			err := env.Update(func(txn *WriteTxn) error {
				w, err := NewWriter(txn, db, 0, 16, Euclidean)
				if err != nil {
					return err
				}
				for i := 0; i < 50; i++ {
					v := make([]float32, 16)
					v[0] = r.Float32()
					if err := w.AddItem(txn, uint32(r.IntN(items)), v); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				done <- err
				return
			}
			commits.Add(1)
		}
	}()
	verified, busy := 0, 0
	for attempts := 0; commits.Load() < 300 && !(raceEnabled && attempts == 3); attempts++ {
		rep, err := Verify(dir) // slow under the race detector: a few attempts then
		switch {
		case err == nil:
			verified++
			if rep.Databases[0].Entries < uint64(items) {
				t.Errorf("a report of %d entries", rep.Databases[0].Entries)
			}
		case errors.Is(err, ErrCorrupt) || errors.Is(err, ErrNotDatabase):
			t.Fatalf("after %d commits: %v", commits.Load(), err)
		default:
			busy++
		}
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(dir); err != nil {
		t.Fatalf("after the writes: %v", err)
	}
	t.Logf("during %d commits: %d verifications completed, %d gave up (the file kept changing)", commits.Load(), verified, busy)
}
