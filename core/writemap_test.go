package core

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// fileSize is the length of data.mdb in dir.
func fileSize(t *testing.T, dir string) int64 {
	t.Helper()
	st, err := os.Stat(filepath.Join(dir, "data.mdb"))
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// allocated is the bytes of data.mdb in dir that have blocks.
func allocated(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(dir, "data.mdb"), &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// addRandom adds n random items of dims dimensions from first on, and builds, in one
// transaction.
func addRandom(env *Env, db *Database, first, n uint32, dims int, seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, 7))
	return env.Update(func(txn *WriteTxn) error {
		w, err := NewWriter(txn, db, 0, dims, Euclidean)
		if err != nil {
			return err
		}
		vec := make([]float32, dims)
		for id := first; id < first+n; id++ {
			for i := range vec {
				vec[i] = rng.Float32()
			}
			if err := w.AddItem(txn, id, vec); err != nil {
				return err
			}
		}
		return w.Build(context.Background(), txn, BuildOptions{Seed: seed, Threads: 1})
	})
}

func TestWriteMapKeepsItsFileShort(t *testing.T) {
	dir := t.TempDir()
	env, err := OpenEnv(dir, Options{MapSize: 1 << 34, WriteMap: WriteMapAlways})
	if err != nil {
		t.Fatal(err)
	}
	if !env.WriteMap() {
		t.Skip("the file system of the temporary directory has no fallocate: MDB_WRITEMAP is off")
	}
	// Alone, the open cuts LMDB's map-sized file back to the used size.
	used, _ := env.UsedBytes()
	if got := fileSize(t, dir); got != used {
		t.Fatalf("after opening, data.mdb is %d bytes, want the used %d", got, used)
	}
	db, err := env.OpenDatabase("", true)
	if err != nil {
		t.Fatal(err)
	}
	// 3,000 items of 512 floats (2 KiB each, overflow pages): the file grows by several
	// reservation margins within one transaction, so the guard has to extend while LMDB writes.
	if err := addRandom(env, db, 0, 3000, 512, 1); err != nil {
		t.Fatal(err)
	}
	used, _ = env.UsedBytes()
	if used < 6<<20 {
		t.Fatalf("the test meant to write more than 6 MiB, LMDB uses %d bytes", used)
	}
	// Within a write transaction's margins of the used size: 2 x 16 MiB at most.
	if got := fileSize(t, dir); got < used || got > used+2*maxRoomPages*4096 {
		t.Fatalf("after a commit, data.mdb is %d bytes for %d used", got, used)
	}
	if err := env.Close(); err != nil {
		t.Fatal(err)
	}
	if got := fileSize(t, dir); got != used {
		t.Fatalf("after closing, data.mdb is %d bytes, want the used %d", got, used)
	}
	// Everything is there after reopening, with or without the write map.
	for _, noWriteMap := range []bool{false, true} {
		mode := WriteMapAlways
		if noWriteMap {
			mode = WriteMapNever
		}
		env, err := OpenEnv(dir, Options{MapSize: 1 << 34, WriteMap: mode})
		if err != nil {
			t.Fatal(err)
		}
		if env.WriteMap() == noWriteMap {
			t.Fatalf("NoWriteMap %v: WriteMap() is %v", noWriteMap, env.WriteMap())
		}
		db, err := env.OpenDatabase("", false)
		if err != nil {
			t.Fatal(err)
		}
		r, txn := openReader(t, env, db, 0, Euclidean)
		if n := r.Len(); n != 3000 {
			t.Fatalf("NoWriteMap %v: %d items, want 3000", noWriteMap, n)
		}
		txn.Abort()
		if _, err := Verify(dir); err != nil {
			t.Fatalf("NoWriteMap %v: %v", noWriteMap, err)
		}
		env.Close()
	}
}

func TestWriteMapEnvVariable(t *testing.T) {
	for value, want := range map[string]bool{"0": false, "1": true} {
		t.Setenv(WriteMapEnv, value)
		env, err := OpenEnv(t.TempDir(), Options{})
		if err != nil {
			t.Fatal(err)
		}
		if env.WriteMap() != want {
			t.Errorf("%s=%s: WriteMap() is %v", WriteMapEnv, value, env.WriteMap())
		}
		env.Close()
	}
}

// TestWriteMapSwitch: an environment switches to MDB_WRITEMAP at the first write transaction
// that begins once its used file is more than a quarter of the memory budget, not while a
// reader is open; the databases opened before keep working, and nothing is lost.
func TestWriteMapSwitch(t *testing.T) {
	t.Setenv(MemoryBudgetEnv, "16M")
	dir := t.TempDir()
	env, err := OpenEnv(dir, Options{MapSize: 1 << 34})
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	named, err := env.OpenDatabase("named", true)
	if err != nil {
		t.Fatal(err)
	}
	db, err := env.OpenDatabase("", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := addRandom(env, named, 0, 100, 8, 3); err != nil {
		t.Fatal(err)
	}
	if env.WriteMap() {
		t.Fatal("an empty environment started with MDB_WRITEMAP")
	}
	// 2,500 items of 512 floats: more than 4 MiB, a quarter of the budget.
	if err := addRandom(env, db, 0, 2500, 512, 1); err != nil {
		t.Fatal(err)
	}
	if used, _ := env.UsedBytes(); used <= 4<<20 {
		t.Fatalf("the test meant to use more than 4 MiB, LMDB uses %d bytes", used)
	}
	// A reader is open: the next write cannot switch.
	r, txn := openReader(t, env, db, 0, Euclidean)
	if err := addRandom(env, named, 100, 10, 8, 4); err != nil {
		t.Fatal(err)
	}
	if env.WriteMap() {
		t.Fatal("switched to MDB_WRITEMAP while a reader was open")
	}
	if n := r.Len(); n != 2500 {
		t.Fatalf("the open reader sees %d items", n)
	}
	txn.Abort()
	if err := addRandom(env, db, 2500, 10, 512, 2); err != nil {
		t.Fatal(err)
	}
	if !env.WriteMap() {
		t.Fatal("did not switch to MDB_WRITEMAP")
	}
	for _, c := range []struct {
		db   *Database
		want uint64
	}{{db, 2510}, {named, 110}} {
		r, txn := openReader(t, env, c.db, 0, Euclidean)
		if n := r.Len(); n != c.want {
			t.Errorf("database %q: %d items after the switch, want %d", c.db.Name(), n, c.want)
		}
		txn.Abort()
	}
}

// TestWriteMapDiskFull fills a small tmpfs: the write that finds no room is refused with
// ErrDiskFull (the process is not killed by SIGBUS), the last commit is intact, and once space is
// freed the same writes succeed.
func TestWriteMapDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v %s", err, out)
	}
	defer exec.Command("umount", "-l", mnt).Run()
	dir := filepath.Join(mnt, "db")
	env, err := OpenEnv(dir, Options{MapSize: 1 << 30, WriteMap: WriteMapAlways})
	if err != nil {
		t.Fatal(err)
	}
	if !env.WriteMap() {
		t.Fatal("tmpfs has fallocate: MDB_WRITEMAP should be on")
	}
	db, err := env.OpenDatabase("", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := addRandom(env, db, 0, 200, 512, 1); err != nil {
		t.Fatal(err)
	}
	// One transaction larger than the disk: the guard has to extend its reservation while
	// LMDB writes, and find no room.
	full := addRandom(env, db, 200, 4000, 512, 2)
	if !errors.Is(full, ErrDiskFull) {
		t.Fatalf("writing 8 MiB into 6: got %v, want ErrDiskFull", full)
	}
	const committed = 200
	check := func(want int) {
		t.Helper()
		r, txn := openReader(t, env, db, 0, Euclidean)
		defer txn.Abort()
		if n := r.Len(); n != uint64(want) {
			t.Fatalf("%d items after the refused write, want the committed %d", n, want)
		}
	}
	check(committed)
	env.Close()
	if out, err := exec.Command("mount", "-o", "remount,size=64m", mnt).CombinedOutput(); err != nil {
		t.Fatalf("remount: %v %s", err, out)
	}
	env, err = OpenEnv(dir, Options{MapSize: 1 << 30, WriteMap: WriteMapAlways})
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	if db, err = env.OpenDatabase("", false); err != nil {
		t.Fatal(err)
	}
	if err := addRandom(env, db, 200, 4000, 512, 2); err != nil {
		t.Fatalf("after freeing space: %v", err)
	}
	check(committed + 4000)
	if _, err := Verify(dir); err != nil {
		t.Fatal(err)
	}
}
