package core

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// LMDB trusts its own page structure: a damaged B-tree page can fault inside LMDB's C code.
// checkDataFile does the checks that are cheap before LMDB maps the file: both meta pages carry
// LMDB's magic and version, the page size is sane, and the file is at least as long as the last
// page the newest meta page names, with both database roots inside it.

const (
	lmdbMagic      = 0xBEEFC0DE
	lmdbVersion    = 1
	lmdbPageHeader = 16
	lmdbMetaFlag   = 0x08
	lmdbInvalidPg  = ^uint64(0)
)

type lmdbMeta struct {
	pageSize uint32
	lastPage uint64
	txnID    uint64
	roots    [2]uint64
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
	// mm_address, mm_mapsize, then two MDB_db of 48 bytes (md_pad u32 of the first = page size).
	dbs := m[24:]
	meta := lmdbMeta{
		pageSize: le.Uint32(dbs),
		roots:    [2]uint64{le.Uint64(dbs[40:]), le.Uint64(dbs[88:])},
		lastPage: le.Uint64(m[120:]),
		txnID:    le.Uint64(m[128:]),
	}
	return meta, nil
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
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s: %w: "+format, append([]any{path, ErrNotDatabase}, args...)...)
	}
	if !st.Mode().IsRegular() {
		return bad("not a regular file (%s)", st.Mode().Type())
	}
	if st.Size() == 0 {
		return nil
	}
	head := make([]byte, 256)
	if _, err := io.ReadFull(f, head); err != nil {
		return bad("file of %d bytes is too short", st.Size())
	}
	m0, err := parseLMDBMeta(head)
	if err != nil {
		return bad("meta page 0: %v", err)
	}
	ps := m0.pageSize
	if ps < 512 || ps > 65536 || ps&(ps-1) != 0 {
		return bad("page size %d", ps)
	}
	if st.Size() < 2*int64(ps) {
		return bad("file of %d bytes is shorter than its two meta pages", st.Size())
	}
	if _, err := f.ReadAt(head, int64(ps)); err != nil {
		return bad("meta page 1 unreadable: %v", err)
	}
	m1, err := parseLMDBMeta(head)
	if err != nil {
		return bad("meta page 1: %v", err)
	}
	if m1.pageSize != ps {
		return bad("meta pages disagree on the page size (%d and %d)", ps, m1.pageSize)
	}
	// LMDB writes the meta of transaction t into page t%2, and reads the page the newest
	// transaction id's parity names: a damaged id could have it read the older meta page.
	if newest, index := max(m0.txnID, m1.txnID), uint64(0); newest > 0 {
		if m1.txnID > m0.txnID {
			index = 1
		}
		if newest&1 != index {
			return bad("the newest meta page (%d) holds transaction %d, which belongs in page %d", index, newest, newest&1)
		}
	}
	// LMDB may fall back to either meta page: both must describe a file that fits.
	pages := uint64(st.Size()) / uint64(ps)
	for i, m := range []lmdbMeta{m0, m1} {
		if m.lastPage >= pages {
			return bad("meta page %d names page %d but the file holds %d pages", i, m.lastPage, pages)
		}
		for _, root := range m.roots {
			if root != lmdbInvalidPg && (root < 2 || root > m.lastPage) {
				return bad("meta page %d: database root page %d outside pages 2..%d", i, root, m.lastPage)
			}
		}
	}
	return nil
}
