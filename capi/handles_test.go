package main

import (
	"errors"
	"runtime"
	"sync"
	"testing"

	"github.com/hannoy-go/hannoy/core"
)

func testWriter(t *testing.T, envSize int64) (*dbHandle, *writerHandle) {
	t.Helper()
	d, err := openDB(t.TempDir(), core.Metric(1), "", envSize, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.close() })
	wh, err := openWriter(d, 0, 4, core.BuildOptions{M: 4, EfConstruction: 8, Threads: 1}, 1)
	if err != nil {
		t.Fatal(err)
	}
	return d, wh
}

func vec(i int) []float32 { return []float32{float32(i), 1, 2, 3} }

// Item operations run on whatever goroutine (OS thread) calls, queued batches on goroutines of
// their own, begin and commit on the owner thread: run with -race.
func TestWriterCallsFromManyThreads(t *testing.T) {
	d, wh := testWriter(t, 0)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			runtime.LockOSThread() // a thread of its own, like a Python thread
			defer runtime.UnlockOSThread()
			for b := 0; b < 20; b++ {
				ids := make([]uint32, 10)
				vecs := make([]float32, 0, 40)
				for i := range ids {
					ids[i] = uint32(g*1000 + b*10 + i)
					vecs = append(vecs, vec(int(ids[i]))...)
				}
				var err error
				if b%2 == 0 {
					err = wh.queue(ids, vecs)
				} else {
					err = wh.direct(func() error { return wh.add(ids, vecs) })
				}
				if err != nil {
					t.Error(err)
					return
				}
				err = wh.direct(func() error {
					ok, err := wh.w.Contains(wh.txn, ids[0])
					if err == nil && !ok {
						err = errors.New("an item added before is missing")
					}
					return err
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	var n uint64
	if err := wh.direct(func() (err error) { n, err = wh.w.Len(wh.txn); return err }); err != nil || n != 800 {
		t.Fatalf("len %d, %v; want 800", n, err)
	}
	if err := wh.end(true); err != nil {
		t.Fatal(err)
	}
	err := d.entry.env.View(func(txn *core.ReadTxn) error {
		w, err := core.NewWriter(txn, d.db, 0, 4, core.Metric(1))
		if err != nil {
			return err
		}
		got, ok, err := w.ItemVector(txn, 3019)
		if err == nil && (!ok || got[0] != 3019) {
			err = errors.New("item 3019 was not committed")
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A queued batch that fails is reported by the next call, and the transaction can only be
// aborted after it.
func TestQueuedBatchFailureIsReported(t *testing.T) {
	_, wh := testWriter(t, 1<<20)
	big := make([]float32, 4*1000)
	ids := make([]uint32, 1000)
	var err error
	for b := 0; b < 1000 && err == nil; b++ {
		for i := range ids {
			ids[i] = uint32(b*1000 + i)
		}
		err = wh.queue(ids, big)
	}
	if err == nil {
		err = wh.direct(func() error { return nil })
	}
	if err == nil || statusOf(err) != statusMapFull {
		t.Fatalf("got %v, want a full map", err)
	}
	if err := wh.end(true); !errors.Is(err, errBusy) {
		t.Fatalf("commit after a failed batch: %v, want busy", err)
	}
	if err := wh.end(false); err != nil {
		t.Fatal(err)
	}
}
