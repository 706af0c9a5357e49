package core

import (
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/PowerDNS/lmdb-go/lmdb"
)

// A snapshot holds one reader slot until goroutines read at once, and then as many as read at
// once, all on the same commit.
func TestSnapshotOpensTransactionsWhenNeeded(t *testing.T) {
	env, db := testDB(t)
	buildItems(t, env, db, 0, Euclidean, 4, randomVectors(rand.New(rand.NewPCG(1, 2)), 50, 4), BuildOptions{})
	snap, err := env.OpenSnapshot(3)
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	if snap.Open() != 1 || snap.Size() != 3 {
		t.Fatalf("fresh snapshot: %d open of %d, expected 1 of 3", snap.Open(), snap.Size())
	}
	var held []*ReadTxn
	for i := 0; i < 3; i++ {
		txn, err := snap.Acquire()
		if err != nil {
			t.Fatal(err)
		}
		if txn.ID() != snap.ID() {
			t.Fatalf("transaction %d sees commit %d, the snapshot %d", i, txn.ID(), snap.ID())
		}
		held = append(held, txn)
	}
	if snap.Open() != 3 {
		t.Fatalf("%d transactions open after 3 concurrent acquisitions", snap.Open())
	}
	// At the limit a fourth reader waits for one to be released.
	got := make(chan *ReadTxn)
	go func() {
		txn, _ := snap.Acquire()
		got <- txn
	}()
	select {
	case <-got:
		t.Fatal("a fourth acquisition did not wait")
	case <-time.After(50 * time.Millisecond):
	}
	snap.Release(held[0])
	if txn := <-got; txn != held[0] {
		t.Fatal("the waiting reader did not get the released transaction")
	}
	snap.Release(held[0])
	snap.Release(held[1])
	snap.Release(held[2])
}

// After a commit lands, a snapshot cannot open transactions on its own commit any more: its
// readers share the transactions it has, and keep seeing its commit.
func TestSnapshotStopsGrowingAfterACommit(t *testing.T) {
	env, db := testDB(t)
	rng := rand.New(rand.NewPCG(3, 4))
	buildItems(t, env, db, 0, Euclidean, 4, randomVectors(rng, 50, 4), BuildOptions{})
	snap, err := env.OpenSnapshot(4)
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	r, err := OpenSnapshotReader(snap, db, 0, Euclidean)
	if err != nil {
		t.Fatal(err)
	}
	first, err := snap.Acquire()
	if err != nil {
		t.Fatal(err)
	}
	more := randomVectors(rng, 50, 4)
	for id, v := range more {
		delete(more, id)
		more[id+1000] = v
	}
	buildItems(t, env, db, 0, Euclidean, 4, more, BuildOptions{})

	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			txn, err := snap.Acquire()
			if err != nil {
				errs <- err
				return
			}
			defer snap.Release(txn)
			if txn.ID() != snap.ID() {
				errs <- errors.New("a transaction of another commit")
			}
			if fresh, err := OpenReader(txn, db, 0, Euclidean); err != nil || fresh.Len() != 50 {
				errs <- errors.New("the snapshot does not see 50 items")
			}
			if _, found, err := r.ItemVector(txn, 1000); err != nil || found {
				errs <- errors.New("the snapshot sees an item of the later commit")
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	snap.Release(first)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if snap.Open() != 1 {
		t.Fatalf("%d transactions open, expected the first only", snap.Open())
	}
}

// A full reader table is an error for a new snapshot and a wait, not an error, for a snapshot
// that already has a transaction.
func TestReaderTableFull(t *testing.T) {
	env, err := OpenEnv(t.TempDir(), Options{MapSize: 1 << 26, MaxReaders: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	var snaps []*Snapshot
	defer func() {
		for _, s := range snaps {
			s.Close()
		}
	}()
	for {
		s, err := env.OpenSnapshot(8)
		if err != nil {
			var opErr *lmdb.OpError
			if !errors.As(err, &opErr) || opErr.Errno != lmdb.ReadersFull {
				t.Fatalf("expected MDB_READERS_FULL, got %v", err)
			}
			break
		}
		snaps = append(snaps, s)
		if len(snaps) > 4 {
			t.Fatal("more snapshots than reader slots")
		}
	}
	if len(snaps) != 4 {
		t.Fatalf("%d snapshots fit in a 4-slot table", len(snaps))
	}
	s := snaps[0]
	a, err := s.Acquire()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() {
		b, err := s.Acquire()
		if err == nil {
			s.Release(b)
		}
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	s.Release(a)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if s.Open() != 1 {
		t.Fatalf("%d transactions open in a full table", s.Open())
	}
}
