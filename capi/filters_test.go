package main

import (
	"errors"
	"math"
	"slices"
	"sync"
	"testing"

	"github.com/hannoy-go/hannoy/core"
)

// The per-query filters of hannoy_reader_search(_items): lengths (negative: no filter) that cut
// one array of ids into one filter per query, built concurrently by the search goroutines.
func TestPerQueryFilters(t *testing.T) {
	ids := []uint32{5, 6, 7, 7, 9, 1}
	lens := []int64{2, -1, 0, 3, -5, 1}
	offsets, err := filterOffsets(lens, int64(len(ids)))
	if err != nil {
		t.Fatal(err)
	}
	filter := perQueryFilter(ids, lens, offsets)
	want := [][]uint32{{5, 6}, nil, {}, {7, 9}, nil, {1}}
	var wg sync.WaitGroup
	for round := 0; round < 4; round++ {
		for i := range lens {
			wg.Add(1)
			go func() {
				defer wg.Done()
				bm := filter(i)
				if want[i] == nil {
					if bm != nil {
						t.Errorf("query %d: filter %v, want none", i, bm)
					}
					return
				}
				if bm == nil || !slices.Equal(bm.ToArray(), want[i]) {
					t.Errorf("query %d: filter %v, want %v", i, bm, want[i])
				}
			}()
		}
	}
	wg.Wait()

	for _, bad := range []struct {
		lens []int64
		nc   int64
	}{
		{[]int64{2, 2}, 3},
		{[]int64{2, 2}, 5},
		{[]int64{-1, -1}, 1},
		{[]int64{math.MaxInt64, 1}, 0},
	} {
		if _, err := filterOffsets(bad.lens, bad.nc); !errors.Is(err, core.ErrInvalidArgument) {
			t.Errorf("lengths %v for %d ids: %v, want ErrInvalidArgument", bad.lens, bad.nc, err)
		}
	}
	if off, err := filterOffsets([]int64{-1, -1}, 0); err != nil || !slices.Equal(off, []int64{0, 0}) {
		t.Errorf("no filters: %v %v", off, err)
	}
}
