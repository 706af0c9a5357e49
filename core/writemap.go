package core

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/PowerDNS/lmdb-go/lmdb"
)

// A writable environment switches to MDB_WRITEMAP once its used file is more than a quarter of
// the memory budget (WriteMapAuto). LMDB then changes the file's pages in place, through its
// memory map, instead of copying every page a transaction changes into memory of its own until
// the commit. Those dirty pages are page cache: the kernel writes them back and drops them under
// memory pressure, so the memory of a write transaction no longer grows with the part of the
// file it changes (a build that links new items into a large graph changes most of its link
// pages). Readers of the last commit never see them: LMDB writes only pages no snapshot uses,
// and the new meta page last. Smaller files keep LMDB's default: storing a page into a new part
// of the file through the map costs a page fault into the file system, about twice what adding
// an item costs otherwise (BenchmarkAddItems: 10.5 against 6.6 us at 784-d, 3.0 against
// 1.3 us at 50-d, medians of 3 alternated runs).
//
// The switch opens the LMDB environment again, which needs no transaction of this Env open: it
// is tried when a write transaction begins (and at OpenEnv); while readers stay open it waits.
//
// MDB_WRITEMAP makes LMDB extend data.mdb to the map size when it opens it, as a sparse file.
// Storing into a hole of the map needs a block from the file system, and when the disk is full
// the kernel answers with SIGBUS, which would kill the process. So a write transaction keeps
// the blocks it may write next reserved (fallocate) ahead of LMDB's highest page (roomGuard),
// and refuses a write with ErrDiskFull when they cannot be reserved. The file's length is kept
// near its used size: a write transaction, which holds LMDB's write lock, cuts it to the end of
// its reservation when it begins; opening and closing the environment cut it to the used size
// when no other process has it open. Pages past the used size (the reservation, pages of
// aborted transactions) are free space to LMDB, as the pages of its free list are.

// WriteMapMode says when a writable environment uses MDB_WRITEMAP.
type WriteMapMode int

const (
	// WriteMapAuto switches to MDB_WRITEMAP once the used file is more than a quarter of the
	// memory budget (Env.MemoryBudget).
	WriteMapAuto WriteMapMode = iota
	// WriteMapAlways opens writable environments with MDB_WRITEMAP.
	WriteMapAlways
	// WriteMapNever keeps LMDB's own dirty pages.
	WriteMapNever
)

// WriteMapEnv is the environment variable that sets the WriteMapMode of environments whose
// Options leave it WriteMapAuto: 1 (always), 0 (never) or auto.
const WriteMapEnv = "HANNOY_WRITEMAP"

// writeMapMode is the mode an environment opened with opts uses.
func writeMapMode(opts Options) WriteMapMode {
	if opts.ReadOnly {
		return WriteMapNever
	}
	if opts.WriteMap != WriteMapAuto {
		return opts.WriteMap
	}
	switch strings.TrimSpace(strings.ToLower(os.Getenv(WriteMapEnv))) {
	case "1", "true", "yes", "on", "always":
		return WriteMapAlways
	case "0", "false", "no", "off", "never":
		return WriteMapNever
	}
	return WriteMapAuto
}

// writeMapWanted reports whether the environment should be switched to MDB_WRITEMAP now.
func (e *Env) writeMapWanted() bool {
	if e.writeMap || e.writeMapMode == WriteMapNever {
		return false
	}
	if e.writeMapMode == WriteMapAlways {
		return true
	}
	used, err := e.UsedBytes()
	if err != nil || used < 4<<20 {
		return false
	}
	budget, _ := e.MemoryBudget(0)
	return used > budget/4
}

// maybeSwitchWriteMap switches to MDB_WRITEMAP if it is wanted and no transaction is open.
func (e *Env) maybeSwitchWriteMap() error {
	// Waiting for the exclusive lock would hold up every transaction that begins meanwhile.
	if e.open.Load() != 0 || !e.writeMapWanted() {
		return nil
	}
	// Not while another goroutine begins a transaction (or waits in BeginWrite for another
	// process's writer): the next writer tries again.
	if !e.mu.TryLock() {
		return nil
	}
	defer e.mu.Unlock()
	if e.writeMap || e.open.Load() != 0 {
		return nil
	}
	return e.switchWriteMap()
}

// switchWriteMap opens the LMDB environment again with MDB_WRITEMAP, and the databases opened
// before. The caller holds e.mu exclusively and no transaction is open. If the file system
// cannot reserve blocks (fallocate) or refuses a file of the map size, the environment stays as
// it was and is not switched again.
func (e *Env) switchWriteMap() error {
	if !fallocateWorks(e.path) {
		e.writeMapMode = WriteMapNever
		return nil
	}
	flags, err := e.env.Flags()
	if err != nil {
		return fmt.Errorf("environment flags: %w", err)
	}
	flags &= lmdb.NoTLS | lmdb.NoReadahead
	if err := e.env.Close(); err != nil {
		return fmt.Errorf("close LMDB environment: %w", err)
	}
	env, err := openLMDB(e.path, e.opts, flags|lmdb.WriteMap)
	if err == nil {
		e.writeMap = true
	} else {
		e.writeMapMode = WriteMapNever
		if env, err = openLMDB(e.path, e.opts, flags); err != nil {
			return err
		}
	}
	e.env = env
	e.warmMu.Lock()
	e.warmed = 0 // the new mapping starts with LMDB's MADV_RANDOM again
	e.warmMu.Unlock()
	if err := e.reopenDatabases(); err != nil {
		return err
	}
	if e.writeMap {
		if e.lockFile, err = os.OpenFile(filepath.Join(e.path, "lock.mdb"), os.O_RDWR, 0); err == nil {
			e.trimIfAlone(false)
		}
	}
	return nil
}

// reopenDatabases opens the handles of e.dbs in a new LMDB environment.
func (e *Env) reopenDatabases() error {
	e.dbsMu.Lock()
	defer e.dbsMu.Unlock()
	if len(e.dbs) == 0 {
		return nil
	}
	txn, err := e.env.BeginTxn(nil, lmdb.Readonly)
	if err != nil {
		return fmt.Errorf("open databases again: %w", err)
	}
	for _, d := range e.dbs {
		var dbi lmdb.DBI
		if d.name == "" {
			dbi, err = txn.OpenRoot(0)
		} else {
			dbi, err = txn.OpenDBI(d.name, 0)
		}
		if err != nil {
			txn.Abort()
			return fmt.Errorf("open database %q again: %w", d.name, err)
		}
		d.dbi = dbi
	}
	return txn.Commit()
}

// fallocateWorks reports whether the file system of dir reserves blocks with fallocate: without
// it, MDB_WRITEMAP could not be kept from storing into holes of a full disk.
func fallocateWorks(dir string) bool {
	f, err := os.CreateTemp(dir, ".hannoy-fallocate-*")
	if err != nil {
		return false
	}
	defer os.Remove(f.Name())
	defer f.Close()
	return fallocate(int(f.Fd()), 0, 4096) == nil
}

// Reservation sizes, in pages.
const (
	// opPages bounds the pages one put or delete may take from the end of the file besides the
	// value's overflow pages: each page on the path from the root (depth <= 8) copied once,
	// one new page per level when they split or merge, and a new root.
	opPages = 3 * (8 + 2)
	// Reservations are between these, sized after the used file (1/16 of it).
	minRoomPages = 256
	maxRoomPages = 4096
)

// roomGuard keeps the blocks of data.mdb that a write transaction of an MDB_WRITEMAP environment
// may store into next reserved. LMDB takes new pages from the end of the used file, one page
// number after the other: the guard reserves [0, reserved) and, before every put or delete,
// counts the pages it could take at most (opPages + the value's overflow pages). After a
// quarter of the margin has been counted, it checks whether LMDB has reached the page `margin`
// below the reservation's end (LMDB writes the page number at the head of every page it takes;
// reserved pages read as zeros until then) and, if so, reserves `margin` more. So LMDB's next
// page stays at least 3/4 of the margin below the end of the reservation.
type roomGuard struct {
	fd       int
	path     string
	psize    int64
	mapSize  int64
	reserved int64 // bytes of the file reserved from 0
	margin   int64 // pages
	pending  int64 // pages counted since the last check
	run      int64 // most pages of one value seen (an overflow run), at least 1
	buf      []byte
}

// beginRoom reserves the room of a new write transaction: the used file is used bytes long.
func beginRoom(fd int, path string, psize, used, mapSize int64) (*roomGuard, error) {
	margin := min(max(used/psize/16, minRoomPages), maxRoomPages)
	g := &roomGuard{fd: fd, path: path, psize: psize, mapSize: mapSize, margin: margin, run: 1}
	g.reserved = used
	if err := g.extend(2 * margin * psize); err != nil {
		return nil, err
	}
	return g, nil
}

// extend reserves n more bytes (no further than the map size).
func (g *roomGuard) extend(n int64) error {
	end := min(g.reserved+n, g.mapSize)
	if end <= g.reserved {
		return nil // LMDB refuses to grow past the map size itself (MDB_MAP_FULL)
	}
	if err := fallocate(g.fd, g.reserved, end-g.reserved); err != nil {
		var st syscall.Statfs_t
		free := int64(-1)
		if syscall.Statfs(g.path, &st) == nil {
			free = int64(st.Bavail) * int64(st.Bsize)
		}
		if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
			return fmt.Errorf("%w: %d bytes are free on the file system of %s and the next %d could not be "+
				"reserved for this write; it was refused before anything was stored: abort the transaction "+
				"(the last commit is intact), or free some space and write again (%v)", ErrDiskFull, free, g.path, end-g.reserved, err)
		}
		return fmt.Errorf("reserve %d bytes of %s: %w", end-g.reserved, g.path, err)
	}
	g.reserved = end
	return nil
}

// before is called before every put or delete that may store value bytes.
func (g *roomGuard) before(value int) error {
	pages := int64(opPages)
	if run := (int64(value) + 16 + g.psize - 1) / g.psize; value > int(g.psize/4) {
		pages += run
		g.run = max(g.run, run)
	}
	if pages*8 > g.margin {
		// Values this large need a larger margin between checks.
		grow := pages*8 - g.margin
		if err := g.extend(grow * g.psize); err != nil {
			return err
		}
		g.margin += grow
	}
	if g.pending+pages > g.margin/4 {
		if err := g.check(); err != nil {
			return err
		}
	}
	g.pending += pages
	return nil
}

// check reserves more room while LMDB has taken a page in the margin's first pages, then starts
// counting again. The window read is longer than any overflow run, so once LMDB's next page is
// past it, one of its pages starts a run and carries its own page number.
func (g *roomGuard) check() error {
	for {
		first := g.reserved/g.psize - g.margin
		n := g.run + 1
		if cap(g.buf) < int(n*g.psize) {
			g.buf = make([]byte, n*g.psize)
		}
		buf := g.buf[:n*g.psize]
		clear(buf)
		if _, err := syscall.Pread(g.fd, buf, first*g.psize); err != nil {
			return fmt.Errorf("read %s: %w", g.path, err)
		}
		taken := false
		for j := int64(0); j < n && !taken; j++ {
			taken = binary.LittleEndian.Uint64(buf[j*g.psize:]) == uint64(first+j)
		}
		if !taken {
			g.pending = 0
			return nil
		}
		if g.reserved >= g.mapSize {
			g.pending = 0
			return nil // LMDB reports MDB_MAP_FULL before it takes a page past the map
		}
		if err := g.extend(g.margin * g.psize); err != nil {
			return err
		}
	}
}

// room is called by a write transaction before its puts or deletes of values of these sizes
// (0 for a delete): all of them, so that a refusal stores none.
func (t *WriteTxn) room(values ...int) error {
	if t.guard == nil {
		return nil
	}
	for _, n := range values {
		if err := t.guard.before(n); err != nil {
			return err
		}
	}
	return nil
}

// put stores key = val in dbi, once there is room for it.
func (t *WriteTxn) put(dbi lmdb.DBI, key, val []byte) error {
	if err := t.room(len(val)); err != nil {
		return err
	}
	return t.txn.Put(dbi, key, val, 0)
}

// trimIfAlone cuts data.mdb back to the used size of the last commit when no other process has
// the environment open: MDB_WRITEMAP extended it to the map size, as a sparse file, which
// copying tools and listings would take at its word. It takes the exclusive lock LMDB's open
// waits for, and gives it back (keeping the shared one LMDB holds) unless keep is set: Close
// keeps it until LMDB has closed the environment.
func (e *Env) trimIfAlone(keep bool) {
	if e.lockFile == nil {
		return
	}
	fd := int(e.lockFile.Fd())
	if !lockExclusive(fd) {
		return
	}
	if used, err := e.usedBytes(); err == nil && used > 0 {
		_ = e.trimTo(used)
	}
	if !keep {
		lockShared(fd)
	}
}

// trimTo cuts data.mdb to size bytes if it is longer.
func (e *Env) trimTo(size int64) error {
	fd, err := e.env.FD()
	if err != nil {
		return err
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(fd), &st); err != nil {
		return err
	}
	if st.Size > size {
		return syscall.Ftruncate(int(fd), size)
	}
	return nil
}
