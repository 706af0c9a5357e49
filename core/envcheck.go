package core

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
)

// LMDB trusts its own page structure: a damaged B-tree page can fault inside LMDB's C code.
// checkDataFile does the checks that are cheap before LMDB maps the file (readMetas): both meta
// pages carry LMDB's magic and version, the page size is sane, the newest meta page is the one
// LMDB will read, and the file is at least as long as the last page either meta page names,
// with their database roots inside it. Verify walks the rest.

const (
	lmdbMagic      = 0xBEEFC0DE
	lmdbVersion    = 1
	lmdbPageHeader = 16
	lmdbMetaFlag   = 0x08
	lmdbInvalidPg  = ^uint64(0)
	lmdbDBRecord   = 48 // an MDB_db
)

// lmdbDB is an MDB_db record: a database's flags, depth, page counts, entries and root.
type lmdbDB struct {
	flags         uint16
	depth         uint16
	branch, leaf  uint64
	overflow      uint64
	entries, root uint64
}

func parseLMDBDB(b []byte) lmdbDB {
	le := binary.LittleEndian
	return lmdbDB{
		flags: le.Uint16(b[4:]), depth: le.Uint16(b[6:]),
		branch: le.Uint64(b[8:]), leaf: le.Uint64(b[16:]), overflow: le.Uint64(b[24:]),
		entries: le.Uint64(b[32:]), root: le.Uint64(b[40:]),
	}
}

// lmdbMeta is a meta page: the page size, the last page and id of its commit, and the records
// of the free list (dbs[0]) and of the main database (dbs[1]).
type lmdbMeta struct {
	pageSize uint32
	lastPage uint64
	txnID    uint64
	dbs      [2]lmdbDB
}

func parseLMDBMeta(p []byte) (lmdbMeta, error) {
	if len(p) < 152 {
		return lmdbMeta{}, errors.New("meta page truncated")
	}
	le := binary.LittleEndian
	if flags := le.Uint16(p[10:]); flags&lmdbMetaFlag == 0 {
		return lmdbMeta{}, fmt.Errorf("page flags %#x are not a meta page's", flags)
	}
	m := p[lmdbPageHeader:]
	if magic := le.Uint32(m); magic != lmdbMagic {
		return lmdbMeta{}, fmt.Errorf("bad magic %#x", magic)
	}
	if v := le.Uint32(m[4:]); v != lmdbVersion {
		return lmdbMeta{}, fmt.Errorf("unsupported LMDB data version %d", v)
	}
	// mm_address, mm_mapsize, then two MDB_db (md_pad u32 of the first = page size).
	dbs := m[24:]
	return lmdbMeta{
		pageSize: le.Uint32(dbs),
		dbs:      [2]lmdbDB{parseLMDBDB(dbs), parseLMDBDB(dbs[lmdbDBRecord:])},
		lastPage: le.Uint64(m[120:]),
		txnID:    le.Uint64(m[128:]),
	}, nil
}

// readMetas checks both meta pages of an LMDB data file of size bytes (size > 0) and returns
// the one LMDB reads.
func readMetas(f *os.File, size int64) (lmdbMeta, error) {
	head := make([]byte, 256)
	if _, err := f.ReadAt(head, 0); err != nil {
		return lmdbMeta{}, fmt.Errorf("file of %d bytes is too short", size)
	}
	m0, err := parseLMDBMeta(head)
	if err != nil {
		return lmdbMeta{}, fmt.Errorf("meta page 0: %v", err)
	}
	ps := m0.pageSize
	if ps < 512 || ps > 65536 || ps&(ps-1) != 0 {
		return lmdbMeta{}, fmt.Errorf("page size %d", ps)
	}
	if size < 2*int64(ps) {
		return lmdbMeta{}, fmt.Errorf("file of %d bytes is shorter than its two meta pages", size)
	}
	if _, err := f.ReadAt(head, int64(ps)); err != nil {
		return lmdbMeta{}, fmt.Errorf("meta page 1 unreadable: %v", err)
	}
	m1, err := parseLMDBMeta(head)
	if err != nil {
		return lmdbMeta{}, fmt.Errorf("meta page 1: %v", err)
	}
	if m1.pageSize != ps {
		return lmdbMeta{}, fmt.Errorf("meta pages disagree on the page size (%d and %d)", ps, m1.pageSize)
	}
	// LMDB writes the meta of transaction t into page t%2 and, once open, reads the page the
	// newest transaction id's parity names: a damaged id could have it read the older page.
	newest, index := m0, uint64(0)
	if m1.txnID > m0.txnID {
		newest, index = m1, 1
	}
	if newest.txnID&1 != index {
		return lmdbMeta{}, fmt.Errorf("the newest meta page (%d) holds transaction %d, which belongs in page %d", index, newest.txnID, newest.txnID&1)
	}
	// LMDB may fall back to either meta page: both must describe a file that fits.
	pages := uint64(size) / uint64(ps)
	for i, m := range []lmdbMeta{m0, m1} {
		if m.lastPage >= pages {
			return lmdbMeta{}, fmt.Errorf("meta page %d names page %d but the file holds %d pages", i, m.lastPage, pages)
		}
		for _, db := range m.dbs {
			if db.root != lmdbInvalidPg && (db.root < 2 || db.root > m.lastPage) {
				return lmdbMeta{}, fmt.Errorf("meta page %d: database root page %d outside pages 2..%d", i, db.root, m.lastPage)
			}
		}
	}
	return newest, nil
}

func checkDataFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s: %w: not a regular file (%s)", path, ErrNotDatabase, st.Mode().Type())
	}
	if st.Size() == 0 {
		return nil
	}
	if _, err := readMetas(f, st.Size()); err != nil {
		return fmt.Errorf("%s: %w: %v", path, ErrNotDatabase, err)
	}
	return nil
}
