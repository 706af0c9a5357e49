package core

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/PowerDNS/lmdb-go/lmdb"
)

// DefaultMapSize is the map size used when Options.MapSize is 0: 1 TiB of address space. LMDB
// files grow with use, not with the map size, so a large map costs nothing on disk.
const DefaultMapSize int64 = 1 << 40

// Options configure an environment.
type Options struct {
	// MapSize is the largest size the data file may reach, in bytes (0: DefaultMapSize). It is
	// a hard limit: writes past it fail with an LMDB MDB_MAP_FULL error.
	MapSize int64
	// MaxDBs is the number of named databases the environment can hold (0: 128).
	MaxDBs int
	// MaxReaders is the size of LMDB's reader table, shared by every process (0: 1022).
	MaxReaders int
	// ReadOnly opens the environment read-only.
	ReadOnly bool
	// MemoryBudget is the memory, in bytes, that readers of this environment plan to use for
	// the file's pages and their own tables (0: MemoryBudgetEnv if set, else 80% of what
	// ReadMemoryInfo finds available when a reader opens). See ReaderOptions.
	MemoryBudget int64
	// WriteMap says when write transactions change the file's pages in place through a writable
	// memory map (MDB_WRITEMAP) instead of keeping the pages they change in memory of LMDB's
	// own until the commit: WriteMapAuto (the default, or WriteMapEnv) once the used file is more
	// than a quarter of the memory budget. See writemap.go.
	WriteMap WriteMapMode
}

// Env is an LMDB environment: a directory holding data.mdb and lock.mdb. It is safe for
// concurrent use. Open it once per path and process.
type Env struct {
	// mu is held shared while a transaction begins and while the LMDB environment is used
	// outside transactions, and exclusively to open the environment again (switchWriteMap).
	mu   sync.RWMutex
	env  *lmdb.Env
	path string
	opts Options
	open atomic.Int64 // transactions begun through Env and not ended yet

	dbsMu sync.Mutex
	dbs   []*Database // the databases opened, whose handles a new LMDB environment opens again

	warmMu sync.Mutex
	warmed int64 // bytes of the file already advised MADV_NORMAL and WILLNEED (see warm)

	writeMap     bool         // opened with MDB_WRITEMAP: write transactions keep room reserved (roomGuard)
	writeMapMode WriteMapMode // when to switch to MDB_WRITEMAP (never WriteMapAuto for a read-only one)
	// lockFile is a second descriptor of lock.mdb, for the exclusive lock of trimIfAlone (an
	// MDB_WRITEMAP environment only). It stays open until LMDB has closed the environment:
	// closing any descriptor of a file drops the process's fcntl locks on it, LMDB's too.
	lockFile *os.File
}

// OpenEnv opens (creating if needed) the LMDB environment in directory path.
func OpenEnv(path string, opts Options) (*Env, error) {
	if opts.MapSize == 0 {
		opts.MapSize = DefaultMapSize
	}
	if opts.MapSize < 0 {
		return nil, invalidf("map size must be positive, got %d", opts.MapSize)
	}
	if opts.MemoryBudget < 0 {
		return nil, invalidf("memory budget must be positive, got %d", opts.MemoryBudget)
	}
	if opts.MaxDBs == 0 {
		opts.MaxDBs = 128
	}
	if opts.MaxReaders == 0 {
		opts.MaxReaders = 1022
	}
	if st, err := os.Stat(path); err == nil {
		if !st.IsDir() {
			return nil, fmt.Errorf("open %s: %w", path, &os.PathError{Op: "open", Path: path, Err: errors.New("not a directory")})
		}
	} else if errors.Is(err, os.ErrNotExist) && !opts.ReadOnly {
		if err := os.MkdirAll(path, 0o755); err != nil {
			return nil, fmt.Errorf("create database directory: %w", err)
		}
	} else {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if err := checkDataFile(filepath.Join(path, "data.mdb")); err != nil {
		return nil, err
	}
	// LMDB then advises the whole map MADV_RANDOM: right for a file larger than memory. A reader
	// of a file that fits switches its pages back to read-ahead (Env.warm).
	flags := uint(lmdb.NoTLS | lmdb.NoReadahead)
	if opts.ReadOnly {
		flags |= lmdb.Readonly
	}
	env, err := openLMDB(path, opts, flags)
	if err != nil {
		return nil, err
	}
	// Free the reader slots of processes that died holding them (killed, crashed): they would
	// pin old pages, so that the file grows instead of reusing them, and fill the table.
	_, _ = env.ReaderCheck()
	e := &Env{env: env, path: path, opts: opts, writeMapMode: writeMapMode(opts)}
	if e.writeMapWanted() {
		e.mu.Lock()
		err = e.switchWriteMap()
		e.mu.Unlock()
		if err != nil {
			return nil, err
		}
	}
	return e, nil
}

// openLMDB creates, configures and opens an lmdb-go environment.
func openLMDB(path string, opts Options, flags uint) (*lmdb.Env, error) {
	env, err := lmdb.NewEnv()
	if err != nil {
		return nil, fmt.Errorf("create LMDB environment: %w", err)
	}
	setup := func() error {
		if err := env.SetMapSize(opts.MapSize); err != nil {
			return err
		}
		if err := env.SetMaxDBs(opts.MaxDBs); err != nil {
			return err
		}
		return env.SetMaxReaders(opts.MaxReaders)
	}
	if err := setup(); err != nil {
		env.Close()
		return nil, fmt.Errorf("configure LMDB environment: %w", err)
	}
	if err := env.Open(path, flags, 0o644); err != nil {
		env.Close()
		return nil, fmt.Errorf("open LMDB environment %s: %w", path, err)
	}
	return env, nil
}

// Close closes the environment. Every transaction must have ended. An environment opened with
// MDB_WRITEMAP that no other process has open has its file cut back to the used size first.
func (e *Env) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.trimIfAlone(true)
	err := e.env.Close()
	if e.lockFile != nil {
		e.lockFile.Close()
	}
	return err
}

// WriteMap reports whether write transactions change the file's pages in place (MDB_WRITEMAP).
func (e *Env) WriteMap() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.writeMap
}

// Path is the directory the environment was opened at.
func (e *Env) Path() string { return e.path }

// MapSize is the map size of the environment.
func (e *Env) MapSize() int64 { return e.opts.MapSize }

// SetMapSize grows (or shrinks) the map to size bytes. LMDB maps the file again: no
// transaction of this process may be open, and no value read before may be used after.
func (e *Env) SetMapSize(size int64) error {
	e.mu.RLock()
	defer e.mu.RUnlock()
	e.warmMu.Lock()
	defer e.warmMu.Unlock()
	if err := e.env.SetMapSize(size); err != nil {
		return err
	}
	e.opts.MapSize = size
	e.warmed = 0 // the new mapping starts with LMDB's MADV_RANDOM again
	return nil
}

// UsedBytes is the size of the last commit's part of the data file: LMDB's last used page + 1,
// times the page size. The file may be longer (LMDB does not shrink it).
func (e *Env) UsedBytes() (int64, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.usedBytes()
}

// usedBytes is UsedBytes for a caller that holds e.mu.
func (e *Env) usedBytes() (int64, error) {
	info, err := e.env.Info()
	if err != nil {
		return 0, fmt.Errorf("environment info: %w", err)
	}
	st, err := e.env.Stat()
	if err != nil {
		return 0, fmt.Errorf("environment stat: %w", err)
	}
	return (info.LastPNO + 1) * int64(st.PSize), nil
}

// MemoryBudget is the memory budget a reader or build plans with now and where it comes from
// ("explicit", "environment", "automatic" or "unlimited"): explicit if > 0, else the
// environment's Options.MemoryBudget if > 0, else MemoryBudgetEnv or what is available.
func (e *Env) MemoryBudget(explicit int64) (int64, string) {
	if explicit <= 0 {
		explicit = e.opts.MemoryBudget
	}
	return memoryBudget(explicit)
}

// warm prepares the first used bytes of the file for a reader that expects to hold them in
// memory: it advises them MADV_NORMAL (the kernel reads around each fault again, instead of the
// single page MDB_NORDAHEAD asks for) and starts reading them in the background (MADV_WILLNEED),
// once per range: a cold start then costs a few large reads instead of one fault per page.
func (e *Env) warm(used int64) {
	e.warmMu.Lock()
	defer e.warmMu.Unlock()
	if used <= e.warmed {
		return
	}
	start, length, ok := fileMapping(filepath.Join(e.path, "data.mdb"))
	if !ok {
		return
	}
	from, to := uintptr(e.warmed), min(uintptr(used), length)
	if to <= from {
		return
	}
	advise(start+from, to-from, adviceNormal)
	e.warmed = int64(to)
	go willNeedPaced(start+from, to-from)
}

// cool undoes warm once the file no longer fits in memory: the range it advised MADV_NORMAL
// goes back to MADV_RANDOM, so that a fault reads its own page rather than the pages around it,
// which a page cache smaller than the file drops before they are used. (A chunked build under a
// memory limit warms the file while it fits, then goes on through codes; GloVe-50's stalled in
// its sixth chunk that way, where the same chunk added by a new process took 18 s.)
func (e *Env) cool() {
	e.warmMu.Lock()
	defer e.warmMu.Unlock()
	if e.warmed == 0 {
		return
	}
	if start, length, ok := fileMapping(filepath.Join(e.path, "data.mdb")); ok {
		advise(start, min(uintptr(e.warmed), length), adviceRandom)
	}
	e.warmed = 0
}

// beginRoom reserves the room a new write transaction of an MDB_WRITEMAP environment stores
// into first (see roomGuard). It runs once the transaction holds the write lock, so the used
// size is that of the last commit of any process.
func (e *Env) beginRoom() (*roomGuard, error) {
	used, err := e.usedBytes()
	if err != nil {
		return nil, err
	}
	st, err := e.env.Stat()
	if err != nil {
		return nil, fmt.Errorf("environment stat: %w", err)
	}
	fd, err := e.env.FD()
	if err != nil {
		return nil, err
	}
	g, err := beginRoom(int(fd), filepath.Join(e.path, "data.mdb"), int64(st.PSize), used, e.opts.MapSize)
	if err != nil {
		return nil, err
	}
	// Holding the write lock, no other process is writing past the used size: the file can be
	// cut to this transaction's reservation (LMDB's open extends it to the map size).
	if err := e.trimTo(g.reserved); err != nil {
		return nil, fmt.Errorf("set the length of %s: %w", g.path, err)
	}
	return g, nil
}

// diskFullSlack is the free space under which a failed write is taken for a full disk.
const diskFullSlack = 16 << 20

// diskFull reports whether err, from a write of LMDB, is the file system running out of space:
// ENOSPC, or the EIO LMDB reports for a short write when the file system has (almost) no space
// left. free is the space then available to this process.
func (e *Env) diskFull(err error) (free int64, full bool) {
	var opErr *lmdb.OpError
	if !errors.As(err, &opErr) {
		return 0, false
	}
	errno, ok := opErr.Errno.(syscall.Errno)
	if !ok || (errno != syscall.ENOSPC && errno != syscall.EIO && errno != syscall.EDQUOT) {
		return 0, false
	}
	var st syscall.Statfs_t
	if syscall.Statfs(e.path, &st) != nil {
		return 0, errno == syscall.ENOSPC
	}
	free = int64(st.Bavail) * int64(st.Bsize)
	return free, errno != syscall.EIO || free < diskFullSlack
}

// LMDB returns the underlying lmdb-go environment, for advanced uses. It changes when the
// environment switches to MDB_WRITEMAP (at a BeginWrite with no transaction of Env open).
func (e *Env) LMDB() *lmdb.Env {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.env
}

// Database is one LMDB database (the unnamed main one or a named one) of an environment. It
// holds any number of hannoy indexes.
type Database struct {
	env  *Env
	dbi  lmdb.DBI
	name string
}

// Env returns the environment of the database.
func (d *Database) Env() *Env { return d.env }

// Name is the database name ("" for the unnamed main database).
func (d *Database) Name() string { return d.name }

// OpenDatabase opens the database called name ("" for the unnamed main database), creating it
// if create is true and it does not exist.
func (e *Env) OpenDatabase(name string, create bool) (*Database, error) {
	open := func(txn *lmdb.Txn, flags uint) (lmdb.DBI, error) {
		if name == "" {
			return txn.OpenRoot(flags)
		}
		return txn.OpenDBI(name, flags)
	}
	// First try without the write lock: the database usually exists.
	txn, err := e.BeginRead()
	if err != nil {
		return nil, fmt.Errorf("open database %q: %w", name, err)
	}
	dbi, err := open(txn.txn, 0)
	if err == nil {
		if err := txn.commit(); err != nil {
			return nil, fmt.Errorf("open database %q: %w", name, err)
		}
		return e.addDatabase(dbi, name), nil
	}
	txn.Abort()
	if !lmdb.IsNotFound(err) || !create {
		return nil, fmt.Errorf("open database %q: %w", name, err)
	}
	err = e.Update(func(txn *WriteTxn) error {
		if err := txn.room(64); err != nil {
			return err
		}
		dbi, err = open(txn.txn, lmdb.Create)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create database %q: %w", name, err)
	}
	return e.addDatabase(dbi, name), nil
}

// addDatabase records a database handle, which switchWriteMap opens again.
func (e *Env) addDatabase(dbi lmdb.DBI, name string) *Database {
	e.dbsMu.Lock()
	defer e.dbsMu.Unlock()
	for _, d := range e.dbs {
		if d.name == name {
			return d
		}
	}
	d := &Database{env: e, dbi: dbi, name: name}
	e.dbs = append(e.dbs, d)
	return d
}

// Update runs fn in a write transaction on a locked OS thread and commits it if fn returns
// nil; otherwise the transaction is aborted and fn's error returned.
func (e *Env) Update(fn func(*WriteTxn) error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	txn, err := e.BeginWrite()
	if err != nil {
		return err
	}
	if err := fn(txn); err != nil {
		txn.Abort()
		return err
	}
	return txn.Commit()
}

// View runs fn in a read transaction.
func (e *Env) View(fn func(*ReadTxn) error) error {
	txn, err := e.BeginRead()
	if err != nil {
		return err
	}
	defer txn.Abort()
	return fn(txn)
}

// BeginWrite begins a write transaction. LMDB requires every use of it, until Commit or Abort,
// to happen on the same OS thread: call runtime.LockOSThread first. It blocks while another
// write transaction (of this process or another) is open.
func (e *Env) BeginWrite() (*WriteTxn, error) {
	if e.writeMapMode != WriteMapNever {
		if err := e.maybeSwitchWriteMap(); err != nil {
			return nil, fmt.Errorf("begin write transaction: %w", err)
		}
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	// Slots of dead readers would keep this transaction from reusing the pages they pin.
	_, _ = e.env.ReaderCheck()
	txn, err := e.env.BeginTxn(nil, 0)
	if err != nil {
		return nil, fmt.Errorf("begin write transaction: %w", err)
	}
	txn.RawRead = true
	e.open.Add(1)
	t := &WriteTxn{txn: txn, env: e}
	if e.writeMap {
		if t.guard, err = e.beginRoom(); err != nil {
			t.Abort()
			return nil, fmt.Errorf("begin write transaction: %w", err)
		}
	}
	return t, nil
}

// BeginRead begins a read transaction: a consistent snapshot of the last commit. A read
// transaction may move between goroutines but must not be used by two at once.
//
// When LMDB's reader table is full, the slots of dead processes are freed and the begin tried
// again; if it is still full, the error is LMDB's MDB_READERS_FULL.
func (e *Env) BeginRead() (*ReadTxn, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	txn, err := e.env.BeginTxn(nil, lmdb.Readonly)
	if lmdb.IsErrno(err, lmdb.ReadersFull) {
		if dead, _ := e.env.ReaderCheck(); dead > 0 {
			txn, err = e.env.BeginTxn(nil, lmdb.Readonly)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("begin read transaction: %w", err)
	}
	txn.RawRead = true
	e.open.Add(1)
	return &ReadTxn{txn: txn, env: e}, nil
}
