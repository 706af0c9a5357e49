package core

import (
	"context"
	"math/rand/v2"
	"testing"
)

// The acceptance figures of the engine: recall@10 against brute force on real data
// (the first 10,000 Fashion-MNIST training images, 500 test images as queries), euclidean,
// M=16, ef_construction=96, ef_search=200.

const recallTarget = 0.97

func fashion(t *testing.T) (map[uint32][]float32, [][]float32) {
	if raceEnabled {
		t.Skip("the recall tests build 10,000 784-d vectors several times: run them without -race")
	}
	base := loadIDX(t, "train-images-10k-idx3-ubyte.gz", 10000)
	queries := loadIDX(t, "t10k-images-500-idx3-ubyte.gz", 500)
	vecs := make(map[uint32][]float32, len(base))
	for i, v := range base {
		vecs[uint32(i)] = v
	}
	return vecs, queries
}

var fashionOpts = BuildOptions{M: 16, EfConstruction: 96}

func TestRecallFashionMNIST(t *testing.T) {
	vecs, queries := fashion(t)
	env, db := testDB(t)
	buildItems(t, env, db, 0, Euclidean, 784, vecs, fashionOpts)
	r, txn := openReader(t, env, db, 0, Euclidean)
	recall := recallAt(t, r, txn, Euclidean, vecs, queries, 10, 200)
	t.Logf("recall@10 = %.4f", recall)
	if recall < recallTarget {
		t.Fatalf("recall@10 = %.4f < %.2f", recall, recallTarget)
	}
}

func TestRecallFashionMNISTIncremental(t *testing.T) {
	vecs, queries := fashion(t)
	env, db := testDB(t)
	first := map[uint32][]float32{}
	second := map[uint32][]float32{}
	for id, v := range vecs {
		if id < 9000 {
			first[id] = v
		} else {
			second[id] = v
		}
	}
	buildItems(t, env, db, 0, Euclidean, 784, first, fashionOpts)
	buildItems(t, env, db, 0, Euclidean, 784, second, fashionOpts)
	checkGraph(t, env, db, 0, fashionOpts)
	r, txn := openReader(t, env, db, 0, Euclidean)
	recall := recallAt(t, r, txn, Euclidean, vecs, queries, 10, 200)
	t.Logf("9,000 then 1,000: recall@10 = %.4f", recall)
	if recall < recallTarget {
		t.Fatalf("recall@10 after an incremental build = %.4f < %.2f", recall, recallTarget)
	}

	// Delete a random 10% and rebuild.
	rng := rand.New(rand.NewPCG(42, 42))
	deleted := map[uint32]bool{}
	update(t, env, func(txn *WriteTxn) error {
		w, err := NewWriter(txn, db, 0, 784, Euclidean)
		if err != nil {
			return err
		}
		for len(deleted) < 1000 {
			id := uint32(rng.IntN(10000))
			if !deleted[id] {
				deleted[id] = true
				if _, err := w.DelItem(txn, id); err != nil {
					return err
				}
				delete(vecs, id)
			}
		}
		return w.Build(context.Background(), txn, fashionOpts)
	})
	checkGraph(t, env, db, 0, fashionOpts)
	allReachable(t, env, db, 0, Euclidean, 784)
	r, txn = openReader(t, env, db, 0, Euclidean)
	for _, q := range queries[:100] {
		res, err := r.Search(txn, q, SearchOptions{Count: 50, Ef: 200})
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range res {
			if deleted[x.ID] {
				t.Fatalf("deleted item %d returned", x.ID)
			}
		}
	}
	recall = recallAt(t, r, txn, Euclidean, vecs, queries, 10, 200)
	t.Logf("after deleting 10%%: recall@10 = %.4f", recall)
	if recall < recallTarget {
		t.Fatalf("recall@10 after deletes = %.4f < %.2f", recall, recallTarget)
	}
}
