package core

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/PowerDNS/lmdb-go/lmdb"
)

// Txn is a read or write transaction: what readers and the read-only Writer methods take.
type Txn interface {
	lmdbTxn() *lmdb.Txn
}

// ReadTxn is a read-only transaction: a consistent snapshot of the last commit. Values read
// through it stay valid until it ends.
type ReadTxn struct {
	txn   *lmdb.Txn
	env   *Env
	ended atomic.Bool
}

func (t *ReadTxn) lmdbTxn() *lmdb.Txn { return t.txn }

// Abort ends the transaction. Ending it again does nothing.
func (t *ReadTxn) Abort() {
	t.txn.Abort()
	t.end()
}

// commit ends the transaction, keeping the database handles it opened.
func (t *ReadTxn) commit() error {
	err := t.txn.Commit()
	t.end()
	return err
}

func (t *ReadTxn) end() {
	if t.ended.CompareAndSwap(false, true) {
		t.env.open.Add(-1)
	}
}

// ID is the LMDB transaction id of the snapshot.
func (t *ReadTxn) ID() uintptr { return t.txn.ID() }

// LMDB returns the underlying lmdb-go transaction.
func (t *ReadTxn) LMDB() *lmdb.Txn { return t.txn }

// WriteTxn is a write transaction. It must be used from the OS thread that began it.
type WriteTxn struct {
	txn *lmdb.Txn
	env *Env
	// rebuilt records the indexes whose links or metadata this transaction changed (by Build or
	// Clear): the committed snapshot no longer describes them, so a later Build in the same
	// transaction reads their graph from this transaction.
	rebuilt map[indexKey]bool
	// guard keeps room reserved in the file for an MDB_WRITEMAP environment (nil otherwise).
	guard *roomGuard
	ended atomic.Bool
}

func (t *WriteTxn) end() {
	if t.ended.CompareAndSwap(false, true) {
		t.env.open.Add(-1)
	}
}

type indexKey struct {
	dbi   lmdb.DBI
	index uint16
}

func (t *WriteTxn) lmdbTxn() *lmdb.Txn { return t.txn }

// Commit commits the transaction. A commit refused for lack of disk space wraps ErrDiskFull.
func (t *WriteTxn) Commit() error {
	if t.guard != nil {
		// The commit takes pages too (the free list's records): make sure the margin is ahead.
		if err := t.guard.check(); err != nil {
			t.Abort()
			return fmt.Errorf("commit: %w", err)
		}
	}
	defer t.end()
	if err := t.txn.Commit(); err != nil {
		if free, full := t.env.diskFull(err); full {
			return fmt.Errorf("commit: %w: %d bytes are free on the file system of %s; this transaction "+
				"was aborted and the last commit is intact: free some space and write again (%v)", ErrDiskFull, free, t.env.path, err)
		}
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// Abort ends the transaction, discarding every change. Ending it again does nothing.
func (t *WriteTxn) Abort() {
	t.txn.Abort()
	t.end()
}

// LMDB returns the underlying lmdb-go transaction.
func (t *WriteTxn) LMDB() *lmdb.Txn { return t.txn }

func (t *WriteTxn) markRebuilt(db *Database, index uint16) {
	if t.rebuilt == nil {
		t.rebuilt = map[indexKey]bool{}
	}
	t.rebuilt[indexKey{db.dbi, index}] = true
}

func (t *WriteTxn) wasRebuilt(db *Database, index uint16) bool {
	return t.rebuilt[indexKey{db.dbi, index}]
}

// Snapshot is a pool of read transactions that all see the same commit, so that many
// goroutines can read one consistent state at once.
//
// A snapshot starts with one transaction (one slot of LMDB's reader table) and opens more only
// when goroutines read at the same moment, up to its limit, and only while no commit has landed
// since it was opened (a later transaction would see another state): after that, goroutines
// share the transactions it has.
type Snapshot struct {
	env   *Env
	pool  chan *ReadTxn
	limit int
	id    uintptr

	mu     sync.Mutex
	all    []*ReadTxn
	stale  bool // a commit landed since the first transaction: no more can be opened
	closed bool
}

// OpenSnapshot opens a snapshot of the last commit that reads with up to n transactions at once
// (n < 1 means 1). Only the first is opened now; see Snapshot.
func (e *Env) OpenSnapshot(n int) (*Snapshot, error) {
	n = max(n, 1)
	t, err := e.BeginRead()
	if err != nil {
		return nil, err
	}
	s := &Snapshot{env: e, pool: make(chan *ReadTxn, n), limit: n, id: t.ID(), all: []*ReadTxn{t}}
	s.pool <- t
	return s, nil
}

func (s *Snapshot) abortAll() {
	for _, t := range s.all {
		t.Abort()
	}
	s.all = nil
}

// Size is the number of transactions the snapshot may use at once: how many goroutines can read
// in parallel.
func (s *Snapshot) Size() int { return s.limit }

// Open is the number of transactions (reader-table slots) the snapshot holds now.
func (s *Snapshot) Open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.all)
}

// ID is the LMDB transaction id of the snapshot.
func (s *Snapshot) ID() uintptr { return s.id }

// Acquire takes a transaction from the pool, opening another on the same commit if all are in
// use and that is still possible, or else waiting for one to be released.
func (s *Snapshot) Acquire() (*ReadTxn, error) {
	select {
	case t, ok := <-s.pool:
		if !ok {
			return nil, fmt.Errorf("snapshot: %w", ErrClosed)
		}
		return t, nil
	default:
	}
	if t := s.grow(); t != nil {
		return t, nil
	}
	t, ok := <-s.pool
	if !ok {
		return nil, fmt.Errorf("snapshot: %w", ErrClosed)
	}
	return t, nil
}

// grow opens one more transaction on the snapshot's commit, or returns nil when the limit is
// reached, a commit has landed since, or LMDB refuses (a full reader table): the caller then
// waits for a transaction in use.
func (s *Snapshot) grow() *ReadTxn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.stale || len(s.all) >= s.limit {
		return nil
	}
	t, err := s.env.BeginRead()
	if err != nil {
		return nil
	}
	if t.ID() != s.id {
		t.Abort()
		s.stale = true
		return nil
	}
	s.all = append(s.all, t)
	return t
}

// Release gives back a transaction taken with Acquire.
func (s *Snapshot) Release(t *ReadTxn) { s.pool <- t }

// Close waits until every transaction is released, then ends them. It is safe to call twice.
func (s *Snapshot) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	for range s.all {
		<-s.pool
	}
	close(s.pool)
	s.abortAll()
}
