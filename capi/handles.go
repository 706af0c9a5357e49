package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/PowerDNS/lmdb-go/lmdb"
	"github.com/hannoy-go/hannoy/core"
)

// registry holds every live object behind an opaque handle, and the environments by path.
type registry struct {
	mu      sync.Mutex
	next    uint64
	objects map[uint64]any
	envs    map[string]*envEntry
}

var reg = &registry{objects: map[uint64]any{}, envs: map[string]*envEntry{}}

func (r *registry) add(obj any) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next++
	r.objects[r.next] = obj
	return r.next
}

func lookup[T any](h uint64, what string) (T, error) {
	reg.mu.Lock()
	obj, ok := reg.objects[uint64(h)]
	reg.mu.Unlock()
	t, isT := obj.(T)
	if !ok || !isT {
		var zero T
		return zero, fmt.Errorf("%s handle %d: %w (it was closed, or never opened)", what, h, core.ErrClosed)
	}
	return t, nil
}

func (r *registry) remove(h uint64) {
	r.mu.Lock()
	delete(r.objects, h)
	r.mu.Unlock()
}

// envEntry is one LMDB environment, shared by every database handle on its path.
type envEntry struct {
	env  *core.Env
	path string
	refs int
	dbs  map[string]*core.Database
	// writerThreads holds the OS threads that have an open writer: a second writer from one of
	// them would wait forever for the first.
	writerThreads map[int]bool
	// mapSize is the current map size (it grows when a Database asks for a larger env_size).
	mapSize int64
	// readOnly: the environment was opened read-only (MDB_RDONLY).
	readOnly bool
	// active counts what holds LMDB transactions (open readers and writers, short views):
	// LMDB may only change the map size while this process has none, because a remap moves
	// the memory their values point into. Guarded by reg.mu.
	active int
}

// acquire registers a user of the environment's transactions (see active).
func (e *envEntry) acquire() {
	reg.mu.Lock()
	e.active++
	reg.mu.Unlock()
}

func (e *envEntry) release() {
	reg.mu.Lock()
	e.active--
	reg.mu.Unlock()
}

// dbReadOnly is the hannoy_db_open flag that opens a database read-only.
const dbReadOnly = 1

type dbHandle struct {
	entry    *envEntry
	db       *core.Database
	metric   core.Metric
	name     string
	readOnly bool  // writers are refused
	budget   int64 // memory budget of its readers and builds in bytes (0: automatic)
	mu       sync.Mutex
	writers  int
	readers  int
}

// openDB opens (or shares) the environment at path and the database name in it. Read-only, the
// directory and the database must exist, and nothing is written (the lock file excepted, unless
// the file system is read-only).
func openDB(path string, metric core.Metric, name string, envSize int64, readOnly bool) (*dbHandle, error) {
	if path == "" {
		return nil, fmt.Errorf("%w: the database path is empty", core.ErrInvalidArgument)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("database path %q: %w", path, err)
	}
	if st, err := os.Stat(abs); err == nil && !st.IsDir() {
		return nil, &os.PathError{Op: "open database", Path: abs, Err: errors.New("not a directory (a database is a directory)")}
	} else if errors.Is(err, os.ErrNotExist) {
		if readOnly {
			return nil, &os.PathError{Op: "open database read-only", Path: abs, Err: os.ErrNotExist}
		}
		if err := os.MkdirAll(abs, 0o755); err != nil {
			return nil, fmt.Errorf("create database directory: %w", err)
		}
	}
	canon, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return nil, fmt.Errorf("database path %q: %w", path, err)
	}
	reg.mu.Lock()
	defer reg.mu.Unlock()
	entry := reg.envs[canon]
	if entry == nil {
		env, err := core.OpenEnv(canon, core.Options{MapSize: envSize, ReadOnly: readOnly})
		if err != nil {
			return nil, err
		}
		entry = &envEntry{env: env, path: canon, dbs: map[string]*core.Database{}, writerThreads: map[int]bool{},
			mapSize: env.MapSize(), readOnly: readOnly}
		reg.envs[canon] = entry
	} else if entry.readOnly && !readOnly {
		return nil, fmt.Errorf("%w: the database at %s is already open read-only in this process; close every "+
			"Database on this path before opening it for writing", errBusy, canon)
	} else if envSize > entry.mapSize && !entry.readOnly {
		// Growing the map remaps the file: only safe while no transaction of this process
		// holds pointers into the old mapping (readers read vectors in place).
		if entry.active > 0 {
			return nil, fmt.Errorf("%w: the database at %s is already open in this process with env_size %d and "+
				"%d reader(s) or writer(s) use it; close them (or every Database on this path) before "+
				"opening it with the larger env_size %d", errBusy, canon, entry.mapSize, entry.active, envSize)
		}
		if err := entry.env.SetMapSize(envSize); err != nil {
			return nil, fmt.Errorf("the database at %s is already open in this process with env_size %d; growing it to %d failed: %w",
				canon, entry.mapSize, envSize, err)
		}
		entry.mapSize = envSize
	}
	db := entry.dbs[name]
	if db == nil {
		db, err = entry.env.OpenDatabase(name, !entry.readOnly)
		if err != nil && entry.readOnly && lmdb.IsNotFound(errors.Unwrap(err)) {
			err = fmt.Errorf("%w: there is no database named %q at %s, and a database opened read-only cannot create one",
				core.ErrMissingMetadata, name, canon)
		}
		if err != nil {
			if entry.refs == 0 {
				entry.env.Close()
				delete(reg.envs, canon)
			}
			return nil, err
		}
		entry.dbs[name] = db
	}
	entry.refs++
	return &dbHandle{entry: entry, db: db, metric: metric, name: name, readOnly: readOnly}, nil
}

func (d *dbHandle) close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.writers > 0 || d.readers > 0 {
		return fmt.Errorf("%w: the database has %d open writer(s) and %d open reader(s): close them first", errBusy, d.writers, d.readers)
	}
	reg.mu.Lock()
	defer reg.mu.Unlock()
	d.entry.refs--
	if d.entry.refs == 0 {
		delete(reg.envs, d.entry.path)
		return d.entry.env.Close()
	}
	return nil
}

var errBusy = errors.New("busy")

// writerHandle owns a write transaction. The transaction begins, commits and aborts on a
// goroutine locked to one OS thread for its whole life (its "owner thread"); builds run there
// too. Item operations (add, delete, clear, contains, len, item vector, need build) run directly
// on the calling thread, one call at a time under mu, without a hand-off to the owner thread
// (the hand-off cost about 130 µs a call, the operations about 1 µs).
//
// Why this is safe, from LMDB 0.9 (mdb.c of github.com/PowerDNS/lmdb-go v1.9.3):
//   - The only thread-bound state of a write transaction is the writer mutex: mdb_txn_renew0
//     locks env->me_wmutex (LOCK_MUTEX, a process-shared robust pthread mutex in lock.mdb) when
//     the transaction begins, and mdb_txn_end unlocks it (UNLOCK_MUTEX) when it commits or
//     aborts. A robust mutex must be unlocked by the thread that locked it (glibc returns
//     EPERM otherwise), hence begin, commit and abort on the owner thread.
//   - Thread-specific data (pthread_getspecific / pthread_setspecific on me_txkey) and
//     pthread_self are used only for read transactions' reader-table slots, and not at all with
//     MDB_NOTLS, which core.OpenEnv sets. mdb_get, mdb_put, mdb_del and the cursor functions of
//     a write transaction neither look at the calling thread nor at thread-local state: they
//     work on the transaction's own memory (dirty list, free pages) and the map, plus pwrite
//     when dirty pages spill, which any thread may do.
//   - The calls never overlap (mu), and mu's lock and unlock order every write a thread makes
//     to the transaction's memory before the next thread's reads (Go's memory model: the
//     mutex's atomics are full barriers), as the hand-off through a channel did.
//
// The same holds for the goroutine that stores a batch queued by hannoy_writer_queue_items: it
// owns the transaction until it closes queued, and every other call waits for that first.
//
// A second writer from the thread that holds an open one still waits for nothing: openWriter
// refuses it (writerThreads), as before.
type writerHandle struct {
	db       *dbHandle
	w        *core.Writer
	txn      *core.WriteTxn
	thread   int
	opts     core.BuildOptions
	ops      chan func()
	progress core.Progress
	mu       sync.Mutex // one call at a time
	cancel   context.CancelFunc
	cancelMu sync.Mutex
	broken   error // set when the transaction can only be aborted
	ended    bool
	// A batch queued by hannoy_writer_queue_items: queued is closed when the goroutine storing
	// it is done, with its outcome in queuedErr; nil when none is in flight. qids and qvecs
	// hold its copy of the items (reused by the next batch). Guarded by mu, except that the
	// goroutine owns the transaction, queuedErr and broken until it closes queued.
	queued    chan struct{}
	queuedErr error
	qids      []uint32
	qvecs     []float32
}

func openWriter(d *dbHandle, index uint16, dims int, opts core.BuildOptions, thread int) (*writerHandle, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	reg.mu.Lock()
	if d.entry.writerThreads[thread] {
		reg.mu.Unlock()
		return nil, fmt.Errorf("%w: this thread already holds an open writer on %s; commit or abort it before opening another (a second writer would wait for the first forever)", errBusy, d.entry.path)
	}
	d.entry.writerThreads[thread] = true
	reg.mu.Unlock()
	release := func() {
		reg.mu.Lock()
		delete(d.entry.writerThreads, thread)
		reg.mu.Unlock()
	}
	d.entry.acquire()
	wh := &writerHandle{db: d, thread: thread, opts: opts, ops: make(chan func())}
	wh.opts.Progress = &wh.progress
	ready := make(chan error)
	go func() {
		// The goroutine never unlocks its thread: the thread ends with it, LMDB state and all.
		runtime.LockOSThread()
		txn, err := d.entry.env.BeginWrite()
		if err == nil {
			wh.txn = txn
			wh.w, err = core.NewWriter(txn, d.db, index, dims, d.metric)
			if err != nil {
				txn.Abort()
			}
		}
		ready <- err
		if err != nil {
			return
		}
		for op := range wh.ops {
			op()
		}
	}()
	if err := <-ready; err != nil {
		release()
		d.entry.release()
		return nil, err
	}
	d.mu.Lock()
	d.writers++
	d.mu.Unlock()
	return wh, nil
}

// settle waits for the queued batch, if any, and returns its error, once: a batch that failed
// leaves the transaction to be aborted. The caller holds mu.
func (wh *writerHandle) settle() error {
	if wh.queued == nil {
		return nil
	}
	<-wh.queued
	wh.queued = nil
	err := wh.queuedErr
	wh.queuedErr = nil
	if err != nil {
		wh.broken = err
	}
	return err
}

// queue copies items and vecs and stores them in a goroutine of their own, after the batch
// queued before (see hannoy_writer_queue_items).
func (wh *writerHandle) queue(ids []uint32, vecs []float32) error {
	wh.mu.Lock()
	defer wh.mu.Unlock()
	if err := wh.ready(); err != nil {
		return err
	}
	// No pointer of the caller outlives the call: the goroutine stores copies.
	wh.qids = append(wh.qids[:0], ids...)
	wh.qvecs = append(wh.qvecs[:0], vecs...)
	done := make(chan struct{})
	wh.queued = done
	go func(ids []uint32, vecs []float32) {
		defer close(done)
		defer func() {
			if p := recover(); p != nil {
				wh.queuedErr = fmt.Errorf("%w: %v", errPanic, p)
			}
		}()
		wh.queuedErr = wh.add(ids, vecs)
	}(wh.qids, wh.qvecs)
	return nil
}

// ready waits for a queued batch and reports why the transaction cannot take another
// operation, if it cannot. The caller holds mu.
func (wh *writerHandle) ready() error {
	if err := wh.settle(); err != nil {
		return err
	}
	return wh.usable()
}

// usable reports why the transaction cannot take another operation, if it cannot. The caller
// holds mu.
func (wh *writerHandle) usable() error {
	if wh.ended {
		return fmt.Errorf("writer: %w (it was committed or aborted)", core.ErrClosed)
	}
	if wh.broken != nil {
		return fmt.Errorf("the writer's transaction failed earlier (%v); abort it: %w", wh.broken, errBusy)
	}
	return nil
}

// direct runs fn on the calling thread, one call at a time: item operations (see writerHandle
// for why LMDB allows it). A panic in fn becomes an error, as in do.
func (wh *writerHandle) direct(fn func() error) (err error) {
	wh.mu.Lock()
	defer wh.mu.Unlock()
	if err := wh.ready(); err != nil {
		return err
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %v", errPanic, p)
		}
	}()
	return fn()
}

// do runs fn on the writer's owner thread: builds, which are long (the hand-off costs nothing
// against them) and cancellable, and may stay where the transaction's rules are simplest.
func (wh *writerHandle) do(fn func() error) error {
	wh.mu.Lock()
	defer wh.mu.Unlock()
	if err := wh.ready(); err != nil {
		return err
	}
	done := make(chan error)
	wh.ops <- func() {
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("%w: %v", errPanic, p)
			}
		}()
		done <- fn()
	}
	return <-done
}

var errPanic = errors.New("internal error")

// fatal marks the transaction unusable after errors that leave it half-written.
func (wh *writerHandle) fatal(err error) error {
	if err != nil {
		wh.broken = err
	}
	return err
}

// end commits or aborts and frees the writer.
func (wh *writerHandle) end(commit bool) error {
	wh.mu.Lock()
	defer wh.mu.Unlock()
	if wh.ended {
		return fmt.Errorf("writer: %w (it was committed or aborted)", core.ErrClosed)
	}
	_ = wh.settle() // a failed batch marks the transaction broken: commit refuses below
	if commit && wh.broken != nil {
		return fmt.Errorf("cannot commit: the writer's transaction failed earlier (%v); abort it: %w", wh.broken, errBusy)
	}
	done := make(chan error)
	wh.ops <- func() {
		if commit {
			done <- wh.txn.Commit()
		} else {
			wh.txn.Abort()
			done <- nil
		}
	}
	err := <-done
	wh.ended = true
	close(wh.ops)
	reg.mu.Lock()
	delete(wh.db.entry.writerThreads, wh.thread)
	reg.mu.Unlock()
	wh.db.mu.Lock()
	wh.db.writers--
	wh.db.mu.Unlock()
	wh.db.entry.release()
	return err
}

type readerHandle struct {
	db     *dbHandle
	reader *core.Reader
	snap   *core.Snapshot
}

func openReader(d *dbHandle, index uint16, opts core.ReaderOptions) (*readerHandle, error) {
	d.entry.acquire()
	snap, err := d.entry.env.OpenSnapshot(runtime.GOMAXPROCS(0))
	if err != nil {
		d.entry.release()
		return nil, err
	}
	r, err := core.OpenSnapshotReaderWith(snap, d.db, index, d.metric, opts)
	if err != nil {
		snap.Close()
		d.entry.release()
		return nil, err
	}
	d.mu.Lock()
	d.readers++
	d.mu.Unlock()
	return &readerHandle{db: d, reader: r, snap: snap}, nil
}

func (rh *readerHandle) close() {
	rh.snap.Close()
	rh.db.mu.Lock()
	rh.db.readers--
	rh.db.mu.Unlock()
	rh.db.entry.release()
}

// with runs fn with one of the reader's transactions.
func (rh *readerHandle) with(fn func(core.Txn) error) error {
	txn, err := rh.snap.Acquire()
	if err != nil {
		return err
	}
	defer rh.snap.Release(txn)
	return fn(txn)
}
