package core

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/RoaringBitmap/roaring/v2"
)

// allIDsRuns is a portable roaring bitmap of every id 0..2**32-1 in run containers: 925 KB that
// a decoder materializing ids would turn into 16 GiB.
func allIDsRuns(t *testing.T) []byte {
	t.Helper()
	bm := roaring.New()
	bm.AddRange(0, 1<<32)
	bm.RunOptimize()
	b, err := bm.ToBytes()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRunContainersCannotAmplify(t *testing.T) {
	b := allIDsRuns(t)
	if _, _, err := DecodeRoaring(b, nil); err == nil {
		t.Fatal("a list of 2**32 ids was decoded")
	}
	if _, err := DecodeLinksValue(append([]byte{TagLinks}, b...), nil); err == nil {
		t.Fatal("links of 2**32 ids were decoded")
	}
	bm, n, err := DecodeRoaringBitmap(b)
	if err != nil || n != len(b) || bm.GetCardinality() != 1<<32 {
		t.Fatalf("DecodeRoaringBitmap: %v, %d of %d bytes", err, n, len(b))
	}
}

// Metadata claiming more items than the database has keys is refused by readers and writers.
func TestMetadataWithMoreItemsThanKeys(t *testing.T) {
	env, db := testDB(t)
	buildItems(t, env, db, 0, Euclidean, 4, map[uint32][]float32{1: {1, 2, 3, 4}, 2: {4, 3, 2, 1}}, BuildOptions{})
	items := allIDsRuns(t)
	v := append([]byte("euclidean\x00"), 0, 0, 0, 4)
	v = binary.BigEndian.AppendUint32(v, uint32(len(items)))
	v = append(v, items...)
	v = binary.LittleEndian.AppendUint32(v, 1)
	v = append(v, 0)
	if m, err := DecodeMetadata(v); err != nil || m.Items.GetCardinality() != 1<<32 {
		t.Fatalf("the metadata should decode (cheaply): %v", err)
	}
	update(t, env, func(txn *WriteTxn) error {
		return txn.LMDB().Put(db.dbi, MetadataKey(0).Bytes(), v, 0)
	})
	txn, err := env.BeginRead()
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Abort()
	if _, err := OpenReader(txn, db, 0, Euclidean); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("reader: expected ErrCorrupt, got %v", err)
	}
	err = env.Update(func(txn *WriteTxn) error {
		_, err := NewWriter(txn, db, 0, 4, Euclidean)
		return err
	})
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("writer: expected ErrCorrupt, got %v", err)
	}
}

// An item whose value is empty (found by FuzzVerify: the error message read its first byte)
// is corruption for searches and item reads, not a panic.
func TestEmptyItemValue(t *testing.T) {
	env, db := testDB(t)
	vecs := map[uint32][]float32{}
	for i := uint32(0); i < 20; i++ {
		vecs[i] = []float32{float32(i), 1, 2, 3}
	}
	buildItems(t, env, db, 0, Euclidean, 4, vecs, BuildOptions{})
	update(t, env, func(txn *WriteTxn) error {
		for i := uint32(0); i < 20; i++ {
			if err := txn.LMDB().Put(db.dbi, ItemKey(0, i).Bytes(), nil, 0); err != nil {
				return err
			}
		}
		return nil
	})
	r, txn := openReader(t, env, db, 0, Euclidean)
	if _, err := r.Search(txn, []float32{1, 1, 2, 3}, SearchOptions{Count: 3, Ef: 10}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("search: expected ErrCorrupt, got %v", err)
	}
	if _, _, err := r.ItemVector(txn, 5); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("item vector: expected ErrCorrupt, got %v", err)
	}
}

// for a build that repairs around a delete, not an internal error.
func TestLinksOfAnUnknownItem(t *testing.T) {
	env, db := testDB(t)
	vecs := map[uint32][]float32{}
	for i := uint32(0); i < 300; i++ {
		vecs[i] = []float32{float32(i), float32(i % 7), 1, 2}
	}
	buildItems(t, env, db, 0, Euclidean, 4, vecs, BuildOptions{M: 4, EfConstruction: 16})
	links, err := AppendLinksValue(nil, []uint32{1})
	if err != nil {
		t.Fatal(err)
	}
	update(t, env, func(txn *WriteTxn) error {
		return txn.LMDB().Put(db.dbi, LinksKey(0, 900000, 0).Bytes(), links, 0)
	})
	err = env.Update(func(txn *WriteTxn) error {
		w, err := NewWriter(txn, db, 0, 4, Euclidean)
		if err != nil {
			return err
		}
		for id := uint32(1); id < 4; id++ {
			if _, err := w.DelItem(txn, id); err != nil {
				return err
			}
		}
		return w.Build(t.Context(), txn, BuildOptions{M: 4, EfConstruction: 16, Threads: 1})
	})
	if err != nil && !errors.Is(err, ErrCorrupt) {
		t.Fatalf("expected success or ErrCorrupt, got %v", err)
	}
}

// Items the metadata names whose vectors are gone (damage) are left out of the codes, in both
// halves of a parallel scan; compressed searches and builds work around them as exact ones do.
func TestCodesOfItemsWithoutVectors(t *testing.T) {
	env, db := testDB(t)
	vecs := map[uint32][]float32{}
	for i := uint32(0); i < 9000; i++ {
		vecs[i] = []float32{float32(i % 97), float32(i % 89), float32(i % 83), float32(i / 100)}
	}
	buildItems(t, env, db, 0, Euclidean, 4, vecs, BuildOptions{Seed: 1})
	gone := []uint32{0, 17, 4500, 4501, 8999}
	update(t, env, func(txn *WriteTxn) error {
		for _, id := range gone {
			if err := txn.LMDB().Del(db.dbi, ItemKey(0, id).Bytes(), nil); err != nil {
				return err
			}
		}
		return nil
	})
	r, snap := openSnapshotReader(t, env, db, Euclidean, ReaderOptions{Mode: ReadCompressed})
	for _, id := range gone {
		if r.codes.slot(id) >= 0 {
			t.Fatalf("item %d has no vector but is in the codes", id)
		}
	}
	txn, _ := snap.Acquire()
	defer snap.Release(txn)
	for _, id := range []uint32{1, 4499, 4502, 8998} {
		res, err := r.Search(txn, vecs[id], SearchOptions{Count: 5, Ef: 50})
		if err != nil || len(res) == 0 || res[0].Distance != 0 {
			t.Fatalf("item %d: %v %v", id, res, err)
		}
		for _, x := range res {
			for _, g := range gone {
				if x.ID == g {
					t.Fatalf("item %d without a vector was returned", g)
				}
			}
		}
	}
	// A build with codes on top of it.
	more := map[uint32][]float32{9000: {1, 2, 3, 4}, 9001: {5, 6, 7, 8}}
	buildItems(t, env, db, 0, Euclidean, 4, more, BuildOptions{Seed: 1, ReadMode: ReadCompressed})
	r2, snap2 := openSnapshotReader(t, env, db, Euclidean, ReaderOptions{Mode: ReadCompressed})
	txn2, _ := snap2.Acquire()
	defer snap2.Release(txn2)
	if r2.Len() != 9002 || r2.codes.slot(9001) < 0 || r2.codes.slot(17) >= 0 {
		t.Fatalf("after a build: %d items, slots %d %d", r2.Len(), r2.codes.slot(9001), r2.codes.slot(17))
	}
	if res, err := r2.Search(txn2, []float32{5, 6, 7, 8}, SearchOptions{Count: 5, Ef: 50}); err != nil || len(res) != 5 {
		t.Fatalf("after a build: %v %v", res, err)
	}
	filter := roaring.BitmapOf(9000, 9001, 17)
	if res, err := r2.Search(txn2, []float32{5, 6, 7, 8}, SearchOptions{Count: 3, Candidates: filter}); err != nil ||
		len(res) != 2 || res[0].ID != 9001 || res[0].Distance != 0 {
		t.Fatalf("after a build, filtered: %v %v", res, err)
	}
}
