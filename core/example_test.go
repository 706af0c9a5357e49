package core_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/hannoy-go/hannoy/core"
)

// The Go API end to end: open an environment, write and build an index in a transaction,
// then search it.
func Example() {
	dir, err := os.MkdirTemp("", "hannoy-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	env, err := core.OpenEnv(dir, core.Options{MapSize: 1 << 30})
	if err != nil {
		log.Fatal(err)
	}
	defer env.Close()
	db, err := env.OpenDatabase("", true) // the unnamed main database
	if err != nil {
		log.Fatal(err)
	}

	// Write: add items, then build the graph; Update commits when the function returns nil.
	err = env.Update(func(txn *core.WriteTxn) error {
		w, err := core.NewWriter(txn, db, 0, 2, core.Euclidean)
		if err != nil {
			return err
		}
		for i := 0; i < 100; i++ {
			if err := w.AddItem(txn, uint32(i), []float32{float32(i), float32(i % 10)}); err != nil {
				return err
			}
		}
		return w.Build(context.Background(), txn, core.BuildOptions{M: 16, EfConstruction: 96})
	})
	if err != nil {
		log.Fatal(err)
	}

	// Read: a reader searches a snapshot.
	err = env.View(func(txn *core.ReadTxn) error {
		r, err := core.OpenReader(txn, db, 0, core.Euclidean)
		if err != nil {
			return err
		}
		res, err := r.Search(txn, []float32{42.2, 2}, core.SearchOptions{Count: 3, Ef: 200})
		if err != nil {
			return err
		}
		for _, x := range res {
			fmt.Printf("item %d at squared distance %.2f\n", x.ID, x.Distance)
		}
		near, _, err := r.SearchItem(txn, 42, core.SearchOptions{Count: 2})
		if err != nil {
			return err
		}
		fmt.Println("closest to item 42:", near[0].ID, near[1].ID)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// item 42 at squared distance 0.04
	// item 43 at squared distance 1.64
	// item 41 at squared distance 2.44
	// closest to item 42: 41 43
}

// Verify checks a database file before it is opened: a file from elsewhere, or one that lived
// through a disk fault, may be damaged where LMDB would fault.
func ExampleVerify() {
	dir, err := os.MkdirTemp("", "hannoy-verify")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	env, err := core.OpenEnv(dir, core.Options{MapSize: 1 << 30})
	if err != nil {
		log.Fatal(err)
	}
	db, err := env.OpenDatabase("", true)
	if err != nil {
		log.Fatal(err)
	}
	err = env.Update(func(txn *core.WriteTxn) error {
		w, err := core.NewWriter(txn, db, 0, 2, core.Euclidean)
		if err != nil {
			return err
		}
		for i := 0; i < 10; i++ {
			if err := w.AddItem(txn, uint32(i), []float32{float32(i), 1}); err != nil {
				return err
			}
		}
		return w.Build(context.Background(), txn, core.BuildOptions{})
	})
	if err != nil {
		log.Fatal(err)
	}
	env.Close()

	report, err := core.Verify(dir)
	if err != nil {
		log.Fatal(err) // errors.Is(err, core.ErrCorrupt): do not open it
	}
	// 23 keys: 10 vectors, their 10 layer-0 neighbour lists, one list on layer 1 (the default
	// seed draws one item up there), the metadata and the version.
	fmt.Println(report.Databases[0].Name == "", report.Databases[0].Entries)
	// Output: true 23
}

// A snapshot reader chooses how to read the file from a memory budget: here one far smaller
// than the file, so it walks the graph with 8-bit codes held in memory and re-ranks the best
// candidates with their exact vectors (results carry exact distances).
func ExampleOpenSnapshotReaderWith() {
	dir, err := os.MkdirTemp("", "hannoy-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	env, err := core.OpenEnv(dir, core.Options{MapSize: 1 << 30})
	if err != nil {
		log.Fatal(err)
	}
	defer env.Close()
	db, err := env.OpenDatabase("", true)
	if err != nil {
		log.Fatal(err)
	}
	err = env.Update(func(txn *core.WriteTxn) error {
		w, err := core.NewWriter(txn, db, 0, 8, core.Euclidean)
		if err != nil {
			return err
		}
		for i := 0; i < 1000; i++ {
			v := make([]float32, 8)
			for d := range v {
				v[d] = float32(i%(d+11)) + float32(i)/1000
			}
			if err := w.AddItem(txn, uint32(i), v); err != nil {
				return err
			}
		}
		return w.Build(context.Background(), txn, core.BuildOptions{})
	})
	if err != nil {
		log.Fatal(err)
	}

	snap, err := env.OpenSnapshot(2)
	if err != nil {
		log.Fatal(err)
	}
	defer snap.Close()
	r, err := core.OpenSnapshotReaderWith(snap, db, 0, core.Euclidean, core.ReaderOptions{MemoryBudget: 64 << 10})
	if err != nil {
		log.Fatal(err)
	}
	plan := r.Plan()
	fmt.Println("mode:", plan.Mode, "- the file is larger than the budget:", plan.FileBytes > plan.Budget)
	txn, err := snap.Acquire()
	if err != nil {
		log.Fatal(err)
	}
	defer snap.Release(txn)
	q, _, err := r.ItemVector(txn, 500)
	if err != nil {
		log.Fatal(err)
	}
	res, err := r.Search(txn, q, core.SearchOptions{Count: 1, Ef: 64})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("item %d at distance %.1f\n", res[0].ID, res[0].Distance)
	// Output:
	// mode: compressed - the file is larger than the budget: true
	// item 500 at distance 0.0
}
