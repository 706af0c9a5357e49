package core

import (
	"bytes"
	"fmt"

	"github.com/PowerDNS/lmdb-go/lmdb"
)

// Writer adds, overwrites and deletes the items of one index, and builds its graph. Its
// methods take the caller's transaction: nothing is committed by the Writer. Changes are
// visible to readers only after Build and Commit.
type Writer struct {
	db     *Database
	index  uint16
	dims   int
	metric Metric
}

// NewWriter returns a writer for index of db with vectors of dims dimensions under metric.
// If the index already exists, its stored metric and dimensions must match.
func NewWriter(txn Txn, db *Database, index uint16, dims int, metric Metric) (*Writer, error) {
	if !metric.Valid() {
		return nil, invalidf("unknown metric %d", metric)
	}
	if dims <= 0 || dims > 1<<24 {
		return nil, invalidf("dimensions must be between 1 and %d, got %d", 1<<24, dims)
	}
	w := &Writer{db: db, index: index, dims: dims, metric: metric}
	meta, err := readMetadata(txn, db, index)
	if err != nil {
		return nil, err
	}
	if meta != nil {
		if meta.Distance != metric.Name() {
			return nil, fmt.Errorf("index %d: %w", index, &MetricError{Stored: meta.Distance, Requested: metric.Name()})
		}
		if int(meta.Dimensions) != dims {
			return nil, fmt.Errorf("index %d is stored with %d dimensions: %w", index, meta.Dimensions, &DimensionError{Expected: int(meta.Dimensions), Received: dims})
		}
		return w, nil
	}
	// Not built yet: compare with a stored item, if any.
	err = w.scan(txn, ModeItem, func(k Key, v []byte) (bool, error) {
		if len(v) != metric.valueLen(dims) {
			return false, invalidf("index %d holds items of %d bytes, which is not a %s vector of %d dimensions (%d bytes)",
				index, len(v), metric, dims, metric.valueLen(dims))
		}
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	return w, nil
}

// Index is the index number the writer writes.
func (w *Writer) Index() uint16 { return w.index }

// Dimensions is the vector length of the index.
func (w *Writer) Dimensions() int { return w.dims }

// Metric is the metric of the index.
func (w *Writer) Metric() Metric { return w.metric }

// AddItem stores vec as item, overwriting any previous vector of item. The graph links it at
// the next Build.
func (w *Writer) AddItem(txn *WriteTxn, item uint32, vec []float32) error {
	return w.AddItems(txn, []uint32{item}, vec)
}

// AddItems stores len(items) vectors, given one after another in vecs. Every vector is checked
// (dimensions, finite values) before anything is written.
func (w *Writer) AddItems(txn *WriteTxn, items []uint32, vecs []float32) error {
	if len(vecs) != len(items)*w.dims {
		return invalidf("%d items need %d values (%d dimensions each), got %d", len(items), len(items)*w.dims, w.dims, len(vecs))
	}
	for i := range items {
		if err := checkVector(vecs[i*w.dims:(i+1)*w.dims], w.dims); err != nil {
			return fmt.Errorf("item %d: %w", items[i], err)
		}
	}
	var val, key []byte
	updated := StatusUpdated.Bytes()
	for i, item := range items {
		val = w.metric.appendValue(val[:0], vecs[i*w.dims:(i+1)*w.dims])
		key = ItemKey(w.index, item).Append(key[:0])
		// Room for both puts first: a refusal stores neither, never a vector without its status.
		if err := txn.room(len(val), len(updated)); err != nil {
			return fmt.Errorf("add item %d: %w", item, err)
		}
		if err := txn.txn.Put(w.db.dbi, key, val, 0); err != nil {
			return fmt.Errorf("add item %d: %w", item, err)
		}
		key = UpdatedKey(w.index, item).Append(key[:0])
		if err := txn.txn.Put(w.db.dbi, key, updated, 0); err != nil {
			return fmt.Errorf("add item %d: %w", item, err)
		}
	}
	return nil
}

// DelItem deletes item and reports whether it existed.
func (w *Writer) DelItem(txn *WriteTxn, item uint32) (bool, error) {
	key := ItemKey(w.index, item).Bytes()
	// Room for the delete and the status first: a refusal changes nothing.
	if err := txn.room(0, 1); err != nil {
		return false, fmt.Errorf("delete item %d: %w", item, err)
	}
	if err := txn.txn.Del(w.db.dbi, key, nil); err != nil {
		if lmdb.IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("delete item %d: %w", item, err)
	}
	if err := txn.txn.Put(w.db.dbi, UpdatedKey(w.index, item).Bytes(), StatusRemoved.Bytes(), 0); err != nil {
		return false, fmt.Errorf("delete item %d: %w", item, err)
	}
	return true, nil
}

// Clear deletes every item, link and the metadata of the index.
func (w *Writer) Clear(txn *WriteTxn) error {
	if err := deletePrefix(txn, w.db, IndexPrefix(w.index)); err != nil {
		return fmt.Errorf("clear index %d: %w", w.index, err)
	}
	txn.markRebuilt(w.db, w.index)
	return nil
}

// deletePrefix deletes every key that starts with prefix.
func deletePrefix(txn *WriteTxn, db *Database, prefix []byte) error {
	cur, err := txn.txn.OpenCursor(db.dbi)
	if err != nil {
		return err
	}
	defer cur.Close()
	k, _, err := cur.Get(prefix, nil, lmdb.SetRange)
	for err == nil && bytes.HasPrefix(k, prefix) {
		if err = txn.room(0); err != nil {
			return err
		}
		if err = cur.Del(0); err != nil {
			return err
		}
		k, _, err = cur.Get(nil, nil, lmdb.Next)
	}
	if err != nil && !lmdb.IsNotFound(err) {
		return err
	}
	return nil
}

// ItemVector returns the vector of item (decoded: binary metrics give 0/1 or -1/+1 values), or
// false if the index has no such item. It sees items not built yet.
func (w *Writer) ItemVector(txn Txn, item uint32) ([]float32, bool, error) {
	return itemVector(txn, w.db, w.index, w.metric, w.dims, item)
}

func itemVector(txn Txn, db *Database, index uint16, metric Metric, dims int, item uint32) ([]float32, bool, error) {
	v, ok, err := get(txn, db, ItemKey(index, item))
	if err != nil || !ok {
		return nil, false, err
	}
	_, vec, err := DecodeItemValue(v, metric.headerSize(), metric.wordSize())
	if err != nil {
		return nil, false, fmt.Errorf("item %d of index %d: %w", item, index, corruptf("%v", err))
	}
	if len(vec) != metric.vectorBytes(dims) {
		return nil, false, fmt.Errorf("item %d of index %d: %w", item, index, corruptf("vector of %d bytes, expected %d", len(vec), metric.vectorBytes(dims)))
	}
	return metric.decodeVector(make([]float32, 0, dims), vec, dims), true, nil
}

// Contains reports whether item is stored (built or not).
func (w *Writer) Contains(txn Txn, item uint32) (bool, error) {
	_, ok, err := get(txn, w.db, ItemKey(w.index, item))
	return ok, err
}

// IsEmpty reports whether the index stores no item.
func (w *Writer) IsEmpty(txn Txn) (bool, error) {
	empty := true
	err := w.scan(txn, ModeItem, func(Key, []byte) (bool, error) { empty = false; return false, nil })
	return empty, err
}

// Len counts the stored items, built or not.
func (w *Writer) Len(txn Txn) (uint64, error) {
	var n uint64
	err := w.scan(txn, ModeItem, func(Key, []byte) (bool, error) { n++; return true, nil })
	return n, err
}

// NeedBuild reports whether the index has changes not built yet, or was never built.
func (w *Writer) NeedBuild(txn Txn) (bool, error) {
	pending := false
	if err := w.scan(txn, ModeUpdated, func(Key, []byte) (bool, error) { pending = true; return false, nil }); err != nil {
		return false, err
	}
	if pending {
		return true, nil
	}
	_, ok, err := get(txn, w.db, MetadataKey(w.index))
	return !ok, err
}

// Iter calls fn for every stored item in ascending order, with its decoded vector (valid only
// during the call). It stops at the first error fn returns.
func (w *Writer) Iter(txn Txn, fn func(item uint32, vec []float32) error) error {
	buf := make([]float32, 0, w.dims)
	return w.scan(txn, ModeItem, func(k Key, v []byte) (bool, error) {
		_, vec, err := DecodeItemValue(v, w.metric.headerSize(), w.metric.wordSize())
		if err != nil {
			return false, fmt.Errorf("item %d: %w", k.Item, corruptf("%v", err))
		}
		buf = w.metric.decodeVector(buf[:0], vec, w.dims)
		return true, fn(k.Item, buf)
	})
}

// scan calls fn for every key of mode in the index, in key order, while fn returns true.
func (w *Writer) scan(txn Txn, mode Mode, fn func(Key, []byte) (bool, error)) error {
	return scanPrefix(txn, w.db, ModePrefix(w.index, mode), fn)
}

func scanPrefix(txn Txn, db *Database, prefix []byte, fn func(Key, []byte) (bool, error)) error {
	return scanFrom(txn, db, prefix, prefix, fn)
}

// scanFrom is scanPrefix starting at the first key >= start (a key with the prefix).
func scanFrom(txn Txn, db *Database, prefix, start []byte, fn func(Key, []byte) (bool, error)) error {
	cur, err := txn.lmdbTxn().OpenCursor(db.dbi)
	if err != nil {
		return err
	}
	defer cur.Close()
	k, v, err := cur.Get(start, nil, lmdb.SetRange)
	for err == nil && bytes.HasPrefix(k, prefix) {
		key, derr := DecodeKey(k)
		if derr != nil {
			return corruptf("key %x: %v", k, derr)
		}
		more, ferr := fn(key, v)
		if ferr != nil || !more {
			return ferr
		}
		k, v, err = cur.Get(nil, nil, lmdb.Next)
	}
	if err != nil && !lmdb.IsNotFound(err) {
		return err
	}
	return nil
}

// get reads one value; ok is false if the key is absent. With RawRead transactions the value
// points into LMDB's memory: valid until the transaction ends or next writes.
func get(txn Txn, db *Database, key Key) (val []byte, ok bool, err error) {
	var kb [KeySize]byte
	v, err := txn.lmdbTxn().Get(db.dbi, key.Append(kb[:0]))
	if err != nil {
		if lmdb.IsNotFound(err) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("read %v: %w", key, err)
	}
	return v, true, nil
}

// readMetadata returns the decoded metadata of index, or nil if it has none.
func readMetadata(txn Txn, db *Database, index uint16) (*Metadata, error) {
	v, ok, err := get(txn, db, MetadataKey(index))
	if err != nil || !ok {
		return nil, err
	}
	m, err := DecodeMetadata(v)
	if err != nil {
		return nil, fmt.Errorf("metadata of index %d: %w", index, corruptf("%v", err))
	}
	// Every item has a key of its own: more items than keys is damage, and would have readers
	// and builds size tables and walks by a number the file cannot back.
	st, err := txn.lmdbTxn().Stat(db.dbi)
	if err != nil {
		return nil, fmt.Errorf("metadata of index %d: %w", index, err)
	}
	if n := m.Items.GetCardinality(); n > st.Entries {
		return nil, fmt.Errorf("metadata of index %d: %w", index, corruptf("%d items, but the database holds %d keys", n, st.Entries))
	}
	return m, nil
}
