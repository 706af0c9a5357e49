package core

import (
	"fmt"
	"sync"

	"github.com/PowerDNS/lmdb-go/lmdb"
)

// Txn is a read or write transaction: what readers and the read-only Writer methods take.
type Txn interface {
	lmdbTxn() *lmdb.Txn
}

// ReadTxn is a read-only transaction: a consistent snapshot of the last commit. Values read
// through it stay valid until it ends.
type ReadTxn struct {
	txn *lmdb.Txn
}

func (t *ReadTxn) lmdbTxn() *lmdb.Txn { return t.txn }

// Abort ends the transaction.
func (t *ReadTxn) Abort() { t.txn.Abort() }

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
}

type indexKey struct {
	dbi   lmdb.DBI
	index uint16
}

func (t *WriteTxn) lmdbTxn() *lmdb.Txn { return t.txn }

// Commit commits the transaction.
func (t *WriteTxn) Commit() error {
	if err := t.txn.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// Abort ends the transaction, discarding every change.
func (t *WriteTxn) Abort() { t.txn.Abort() }

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
type Snapshot struct {
	pool   chan *ReadTxn
	all    []*ReadTxn
	mu     sync.Mutex
	closed bool
}

// OpenSnapshot opens n read transactions on the same commit (n < 1 means 1).
func (e *Env) OpenSnapshot(n int) (*Snapshot, error) {
	n = max(n, 1)
	for attempt := 0; ; attempt++ {
		s := &Snapshot{pool: make(chan *ReadTxn, n)}
		same := true
		for i := 0; i < n; i++ {
			t, err := e.BeginRead()
			if err != nil {
				s.abortAll()
				return nil, err
			}
			s.all = append(s.all, t)
			if t.ID() != s.all[0].ID() {
				same = false
				break
			}
		}
		if same {
			for _, t := range s.all {
				s.pool <- t
			}
			return s, nil
		}
		// A commit landed between two begins: start again; after a few tries settle for one
		// transaction, which is always consistent.
		s.abortAll()
		if attempt == 3 {
			n = 1
		}
	}
}

func (s *Snapshot) abortAll() {
	for _, t := range s.all {
		t.Abort()
	}
	s.all = nil
}

// Size is the number of transactions in the pool: how many goroutines can read at once.
func (s *Snapshot) Size() int { return len(s.all) }

// ID is the LMDB transaction id of the snapshot.
func (s *Snapshot) ID() uintptr { return s.all[0].ID() }

// Acquire takes a transaction from the pool, waiting for one if all are in use.
func (s *Snapshot) Acquire() (*ReadTxn, error) {
	t, ok := <-s.pool
	if !ok {
		return nil, fmt.Errorf("snapshot: %w", ErrClosed)
	}
	return t, nil
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
