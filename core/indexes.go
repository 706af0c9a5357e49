package core

import (
	"github.com/PowerDNS/lmdb-go/lmdb"

	"github.com/hannoy-go/hannoy/core/internal/vecmath"
)

// KernelImpl names the distance kernels chosen for this CPU: "avx512", "avx2+fma" or "generic".
func KernelImpl() string { return vecmath.Impl() }

// Indexes lists, ascending, the indexes of db that have been built (that have metadata). It
// seeks once per index, whatever their size. In the unnamed main database, keys that are not
// hannoy keys are stepped over: LMDB keeps there a record naming each named database of the
// environment (e.g. "second", between the keys of indexes 0x7365 and 0x7366). In a named
// database such a key is an error.
func Indexes(txn Txn, db *Database) ([]int, error) {
	cur, err := txn.lmdbTxn().OpenCursor(db.dbi)
	if err != nil {
		return nil, err
	}
	defer cur.Close()
	out := []int{}
	for next := 0; next <= 0xFFFF; {
		k, _, err := cur.Get(IndexPrefix(uint16(next)), nil, lmdb.SetRange)
		var key Key
		for err == nil {
			var derr error
			if key, derr = DecodeKey(k); derr == nil {
				break
			}
			if db.name != "" {
				return nil, corruptf("key %x: %v", k, derr)
			}
			k, _, err = cur.Get(nil, nil, lmdb.Next)
		}
		if lmdb.IsNotFound(err) {
			break
		}
		if err != nil {
			return nil, err
		}
		if key.Mode == ModeMetadata && key.Item == 0 && key.Layer == 0 {
			out = append(out, int(key.Index))
		}
		next = int(key.Index) + 1
	}
	return out, nil
}
