// Command capi is libhannoy, the C ABI over the hannoy engine, built with
// go build -buildmode=c-shared. See ABI.md for the rules every function follows.
package main

/*
#include <stdint.h>
#include <stdlib.h>
*/
import "C"

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"strings"
	"syscall"
	"unsafe"

	"github.com/PowerDNS/lmdb-go/lmdb"
	"github.com/RoaringBitmap/roaring/v2"
	"golang.org/x/sys/unix"

	"github.com/hannoy-go/hannoy/core"
)

func main() {}

// versionFile is capi/VERSION, the one place the package's version is written: setuptools
// reads it for the Python distribution (pyproject.toml), setup.py writes it into hannoy/_version.py.
//
//go:embed VERSION
var versionFile string

// Version is the package version reported by hannoy_version (capi/VERSION).
var Version = strings.TrimSpace(versionFile)

// Status codes, see ABI.md.
const (
	statusOK              = 0
	statusInvalid         = 1
	statusIO              = 2
	statusRuntime         = 3
	statusMapFull         = 4
	statusMissingMetadata = 5
	statusNeedBuild       = 6
	statusMetric          = 7
	statusDimensions      = 8
	statusCancelled       = 9
	statusCorrupt         = 10
	statusBusy            = 11
	statusClosed          = 12
	statusReadersFull     = 13
	statusPanic           = 14
	statusDiskFull        = 15
)

// statusOf classifies an error for the caller.
func statusOf(err error) C.int {
	var errno syscall.Errno
	var pathErr *os.PathError
	if errors.Is(err, core.ErrDiskFull) {
		return statusDiskFull
	}
	var opErr *lmdb.OpError
	if errors.As(err, &opErr) {
		switch opErr.Errno {
		case lmdb.MapFull:
			return statusMapFull
		case lmdb.ReadersFull:
			return statusReadersFull
		case lmdb.Invalid, lmdb.VersionMismatch:
			return statusIO
		case lmdb.Corrupted, lmdb.PageNotFound:
			return statusCorrupt
		}
		// A system error from LMDB (permission denied, no space, ...): lmdb-go's OpError does
		// not unwrap to it.
		if _, ok := opErr.Errno.(syscall.Errno); ok {
			return statusIO
		}
	}
	switch {
	case errors.Is(err, errPanic):
		return statusPanic
	case errors.Is(err, core.ErrDimensions):
		return statusDimensions
	case errors.Is(err, core.ErrMetricMismatch):
		return statusMetric
	case errors.Is(err, core.ErrInvalidArgument):
		return statusInvalid
	case errors.Is(err, core.ErrMissingMetadata):
		return statusMissingMetadata
	case errors.Is(err, core.ErrNeedBuild):
		return statusNeedBuild
	case errors.Is(err, core.ErrCancelled):
		return statusCancelled
	case errors.Is(err, core.ErrClosed):
		return statusClosed
	case errors.Is(err, errBusy):
		return statusBusy
	case errors.Is(err, core.ErrNotDatabase):
		return statusIO
	case errors.Is(err, core.ErrCorrupt):
		return statusCorrupt
	case errors.As(err, &pathErr), errors.As(err, &errno):
		return statusIO
	}
	return statusRuntime
}

func setErr(out **C.char, msg string) {
	if out != nil {
		*out = C.CString(msg)
	}
}

// guard runs fn, turning its error or panic into a status and a message.
func guard(errOut **C.char, fn func() error) (status C.int) {
	defer func() {
		if p := recover(); p != nil {
			setErr(errOut, fmt.Sprintf("internal error (please report it): %v", p))
			status = statusPanic
		}
	}()
	if err := fn(); err != nil {
		setErr(errOut, err.Error())
		return statusOf(err)
	}
	return statusOK
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{core.ErrInvalidArgument}, args...)...)
}

func needPtr(ok bool, name string) error {
	if !ok {
		return invalid("%s is NULL", name)
	}
	return nil
}

func jsonOut(out **C.char, v any) error {
	if out == nil {
		return invalid("json output pointer is NULL")
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	*out = C.CString(string(b))
	return nil
}

func setI32(p *C.int32_t, v bool) {
	if p != nil {
		if v {
			*p = 1
		} else {
			*p = 0
		}
	}
}

//export hannoy_free
func hannoy_free(p unsafe.Pointer) { C.free(p) }

//export hannoy_version
func hannoy_version(out **C.char, errOut **C.char) C.int {
	return guard(errOut, func() error {
		return jsonOut(out, map[string]string{"version": Version, "format": core.FormatVersion.String(), "kernels": core.KernelImpl()})
	})
}

//export hannoy_verify
func hannoy_verify(path *C.char, out **C.char, errOut **C.char) C.int {
	return guard(errOut, func() error {
		if err := needPtr(path != nil, "path"); err != nil {
			return err
		}
		rep, err := core.Verify(C.GoString(path))
		if err != nil {
			return err
		}
		return jsonOut(out, rep)
	})
}

//export hannoy_db_open
func hannoy_db_open(path *C.char, metric C.int32_t, name *C.char, envSize C.uint64_t, flags C.int32_t, budget C.int64_t, out *C.uint64_t, errOut **C.char) C.int {
	return guard(errOut, func() error {
		if err := needPtr(path != nil && out != nil, "path or output handle"); err != nil {
			return err
		}
		m := core.Metric(metric)
		if metric < 0 || !m.Valid() {
			return invalid("metric must be 0..6, got %d", int32(metric))
		}
		if uint64(envSize) > math.MaxInt64 {
			return invalid("env_size %d is too large", uint64(envSize))
		}
		n := ""
		if name != nil {
			n = C.GoString(name)
			if n == "" {
				return invalid("a database name must not be empty (use NULL for the unnamed database)")
			}
		}
		if flags&^dbReadOnly != 0 {
			return invalid("unknown database flags %#x", int32(flags))
		}
		if budget < 0 {
			return invalid("memory_budget must be a positive number of bytes, got %d", int64(budget))
		}
		d, err := openDB(C.GoString(path), m, n, int64(envSize), flags&dbReadOnly != 0)
		if err != nil {
			return err
		}
		d.budget = int64(budget)
		*out = C.uint64_t(reg.add(d))
		return nil
	})
}

//export hannoy_db_close
func hannoy_db_close(h C.uint64_t, errOut **C.char) C.int {
	return guard(errOut, func() error {
		d, err := lookup[*dbHandle](uint64(h), "database")
		if err != nil {
			return err
		}
		if err := d.close(); err != nil {
			return err
		}
		reg.remove(uint64(h))
		return nil
	})
}

//export hannoy_db_info
func hannoy_db_info(h C.uint64_t, out **C.char, errOut **C.char) C.int {
	return guard(errOut, func() error {
		d, err := lookup[*dbHandle](uint64(h), "database")
		if err != nil {
			return err
		}
		var name any
		if d.name != "" {
			name = d.name
		}
		indexes, err := builtIndexes(d)
		if err != nil {
			return err
		}
		reg.mu.Lock()
		mapSize := d.entry.mapSize
		reg.mu.Unlock()
		return jsonOut(out, map[string]any{"path": d.entry.path, "name": name, "metric": d.metric.String(),
			"env_size": mapSize, "indexes": indexes, "write_map": d.entry.env.WriteMap()})
	})
}

// builtIndexes lists the indexes of the database that have metadata.
func builtIndexes(d *dbHandle) ([]int, error) {
	out := []int{}
	d.entry.acquire()
	defer d.entry.release()
	err := d.entry.env.View(func(txn *core.ReadTxn) error {
		var err error
		out, err = core.Indexes(txn, d.db)
		return err
	})
	return out, err
}

//export hannoy_writer_open
func hannoy_writer_open(h C.uint64_t, index C.uint32_t, dims C.uint32_t, m C.uint32_t, m0 C.uint32_t,
	ef C.uint32_t, hasSeed C.int32_t, seed C.uint64_t, threads C.int32_t, out *C.uint64_t, errOut **C.char) C.int {
	return guard(errOut, func() error {
		if err := needPtr(out != nil, "output handle"); err != nil {
			return err
		}
		d, err := lookup[*dbHandle](uint64(h), "database")
		if err != nil {
			return err
		}
		if d.readOnly {
			return invalid("expected a database open for writing, but this one was opened read-only (read_only=True); open it without read_only to write")
		}
		if index > math.MaxUint16 {
			return invalid("index must be between 0 and 65535, got %d", uint32(index))
		}
		if m < 2 {
			return invalid("m must be at least 2, got %d", uint32(m))
		}
		if ef < 1 {
			return invalid("ef must be at least 1, got %d", uint32(ef))
		}
		opts := core.BuildOptions{M: int(m), M0: int(m0), EfConstruction: int(ef), Threads: int(threads), MemoryBudget: d.budget}
		if m0 != 0 && m0 < m {
			return invalid("m0 must be at least m (%d), got %d", uint32(m), uint32(m0))
		}
		if hasSeed != 0 {
			opts.Seed = uint64(seed)
			if opts.Seed == 0 {
				opts.Seed = 1<<63 | 1 // 0 means "default" inside the engine
			}
		}
		wh, err := openWriter(d, uint16(index), int(dims), opts, unix.Gettid())
		if err != nil {
			return err
		}
		*out = C.uint64_t(reg.add(wh))
		return nil
	})
}

func writerOf(h C.uint64_t) (*writerHandle, error) { return lookup[*writerHandle](uint64(h), "writer") }

//export hannoy_writer_add_items
func hannoy_writer_add_items(h C.uint64_t, items *C.uint32_t, vectors *C.float, n C.uint64_t, dims C.uint32_t, errOut **C.char) C.int {
	return guard(errOut, func() error {
		wh, err := writerOf(h)
		if err != nil {
			return err
		}
		if n == 0 {
			return wh.direct(func() error { return nil }) // only reports a queued batch's outcome
		}
		if err := needPtr(items != nil && vectors != nil, "items or vectors"); err != nil {
			return err
		}
		if err := wh.checkDims(dims); err != nil {
			return err
		}
		if uint64(n) > math.MaxInt32 || uint64(n)*uint64(dims) > 1<<40 {
			return invalid("too many vectors in one call: %d", uint64(n))
		}
		ids := unsafe.Slice((*uint32)(unsafe.Pointer(items)), int(n))
		vecs := floatsAt(unsafe.Pointer(vectors), int(n)*int(dims))
		return wh.direct(func() error { return wh.add(ids, vecs) })
	})
}

// hannoy_writer_queue_items is hannoy_writer_add_items in the background: it copies the items
// and returns; a goroutine stores them while the caller prepares the next ones (add_item loops:
// Python packs lists while Go writes to LMDB, on two cores). The caller must have checked the
// vectors (dimensions, finite values): the outcome of a queued batch, stored or refused, is
// reported by the writer's next call, and a refused batch leaves the transaction to be aborted.
//
//export hannoy_writer_queue_items
func hannoy_writer_queue_items(h C.uint64_t, items *C.uint32_t, vectors *C.float, n C.uint64_t, dims C.uint32_t, errOut **C.char) C.int {
	return guard(errOut, func() error {
		wh, err := writerOf(h)
		if err != nil {
			return err
		}
		if err := wh.checkDims(dims); err != nil {
			return err
		}
		if n == 0 {
			return wh.direct(func() error { return nil })
		}
		if err := needPtr(items != nil && vectors != nil, "items or vectors"); err != nil {
			return err
		}
		if uint64(n) > math.MaxInt32 || uint64(n)*uint64(dims) > 1<<40 {
			return invalid("too many vectors in one call: %d", uint64(n))
		}
		return wh.queue(unsafe.Slice((*uint32)(unsafe.Pointer(items)), int(n)), floatsAt(unsafe.Pointer(vectors), int(n)*int(dims)))
	})
}

// checkDims refuses vectors whose length is not the index's.
func (wh *writerHandle) checkDims(dims C.uint32_t) error {
	if int(dims) != wh.w.Dimensions() {
		return fmt.Errorf("vectors of %d dimensions given to an index of %d: %w", uint32(dims), wh.w.Dimensions(),
			&core.DimensionError{Expected: wh.w.Dimensions(), Received: int(dims)})
	}
	return nil
}

// add stores vectors; a refused vector (dimensions, NaN, inf) changes nothing and leaves the
// transaction usable, any other failure (a full map) leaves it to be aborted. The caller holds
// wh.mu (direct).
func (wh *writerHandle) add(ids []uint32, vecs []float32) error {
	err := wh.w.AddItems(wh.txn, ids, vecs)
	if err != nil && !errors.Is(err, core.ErrInvalidArgument) && !errors.Is(err, core.ErrDimensions) {
		return wh.fatal(err)
	}
	return err
}

// floatsAt views n float32 values at p, copying them when p is not 4-byte aligned (a buffer
// the caller made at an odd offset).
func floatsAt(p unsafe.Pointer, n int) []float32 {
	if uintptr(p)%unsafe.Alignof(float32(0)) == 0 {
		return unsafe.Slice((*float32)(p), n)
	}
	out := make([]float32, n)
	copy(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(out))), 4*n), unsafe.Slice((*byte)(p), 4*n))
	return out
}

//export hannoy_writer_del_item
func hannoy_writer_del_item(h C.uint64_t, item C.uint32_t, existed *C.int32_t, errOut **C.char) C.int {
	return guard(errOut, func() error {
		wh, err := writerOf(h)
		if err != nil {
			return err
		}
		return wh.direct(func() error {
			ok, err := wh.w.DelItem(wh.txn, uint32(item))
			setI32(existed, ok)
			return wh.fatal(err)
		})
	})
}

//export hannoy_writer_clear
func hannoy_writer_clear(h C.uint64_t, errOut **C.char) C.int {
	return guard(errOut, func() error {
		wh, err := writerOf(h)
		if err != nil {
			return err
		}
		return wh.direct(func() error { return wh.fatal(wh.w.Clear(wh.txn)) })
	})
}

//export hannoy_writer_need_build
func hannoy_writer_need_build(h C.uint64_t, need *C.int32_t, errOut **C.char) C.int {
	return guard(errOut, func() error {
		wh, err := writerOf(h)
		if err != nil {
			return err
		}
		return wh.direct(func() error {
			ok, err := wh.w.NeedBuild(wh.txn)
			setI32(need, ok)
			return err
		})
	})
}

//export hannoy_writer_contains
func hannoy_writer_contains(h C.uint64_t, item C.uint32_t, found *C.int32_t, errOut **C.char) C.int {
	return guard(errOut, func() error {
		wh, err := writerOf(h)
		if err != nil {
			return err
		}
		return wh.direct(func() error {
			ok, err := wh.w.Contains(wh.txn, uint32(item))
			setI32(found, ok)
			return err
		})
	})
}

//export hannoy_writer_item_vector
func hannoy_writer_item_vector(h C.uint64_t, item C.uint32_t, out *C.float, dims C.uint32_t, found *C.int32_t, errOut **C.char) C.int {
	return guard(errOut, func() error {
		wh, err := writerOf(h)
		if err != nil {
			return err
		}
		if err := needPtr(out != nil, "output vector"); err != nil {
			return err
		}
		if int(dims) != wh.w.Dimensions() {
			return invalid("the output buffer holds %d values but the index has %d dimensions", uint32(dims), wh.w.Dimensions())
		}
		return wh.direct(func() error {
			vec, ok, err := wh.w.ItemVector(wh.txn, uint32(item))
			if ok {
				copy(unsafe.Slice((*float32)(unsafe.Pointer(out)), int(dims)), vec)
			}
			setI32(found, ok)
			return err
		})
	})
}

//export hannoy_writer_len
func hannoy_writer_len(h C.uint64_t, n *C.uint64_t, errOut **C.char) C.int {
	return guard(errOut, func() error {
		wh, err := writerOf(h)
		if err != nil {
			return err
		}
		if err := needPtr(n != nil, "output count"); err != nil {
			return err
		}
		return wh.direct(func() error {
			c, err := wh.w.Len(wh.txn)
			*n = C.uint64_t(c)
			return err
		})
	})
}

//export hannoy_writer_build
func hannoy_writer_build(h C.uint64_t, errOut **C.char) C.int {
	return guard(errOut, func() error {
		wh, err := writerOf(h)
		if err != nil {
			return err
		}
		return wh.do(func() error {
			ctx, cancel := newCancelContext()
			wh.cancelMu.Lock()
			wh.cancel = cancel
			wh.cancelMu.Unlock()
			defer func() {
				wh.cancelMu.Lock()
				wh.cancel = nil
				wh.cancelMu.Unlock()
				cancel()
			}()
			// The build's graph is made of many small long-lived objects: a tighter GC target
			// lowers the build's peak memory (about 10 MiB on 60,000 784-d vectors) at no
			// measurable cost in time.
			defer debug.SetGCPercent(debug.SetGCPercent(50))
			// core.Writer.Build hands memory back itself after a build short of memory.
			return wh.fatal(wh.w.Build(ctx, wh.txn, wh.opts))
		})
	})
}

//export hannoy_writer_cancel
func hannoy_writer_cancel(h C.uint64_t) C.int {
	return guard(nil, func() error {
		wh, err := writerOf(h)
		if err != nil {
			return err
		}
		wh.cancelMu.Lock()
		defer wh.cancelMu.Unlock()
		if wh.cancel != nil {
			wh.cancel()
		}
		return nil
	})
}

//export hannoy_writer_progress
func hannoy_writer_progress(h C.uint64_t, phase *C.int32_t, done *C.uint64_t, total *C.uint64_t) C.int {
	return guard(nil, func() error {
		wh, err := writerOf(h)
		if err != nil {
			return err
		}
		p, d, t := wh.progress.Get()
		if phase != nil {
			*phase = C.int32_t(p)
		}
		if done != nil {
			*done = C.uint64_t(d)
		}
		if total != nil {
			*total = C.uint64_t(t)
		}
		return nil
	})
}

//export hannoy_writer_commit
func hannoy_writer_commit(h C.uint64_t, errOut **C.char) C.int {
	return guard(errOut, func() error {
		wh, err := writerOf(h)
		if err != nil {
			return err
		}
		err = wh.end(true)
		if errors.Is(err, errBusy) {
			return err // refused (the transaction failed earlier): the writer stays, to be aborted
		}
		reg.remove(uint64(h))
		return err
	})
}

//export hannoy_writer_abort
func hannoy_writer_abort(h C.uint64_t, errOut **C.char) C.int {
	return guard(errOut, func() error {
		wh, err := writerOf(h)
		if err != nil {
			return err
		}
		reg.remove(uint64(h))
		return wh.end(false)
	})
}

//export hannoy_reader_open
func hannoy_reader_open(h C.uint64_t, index C.uint32_t, budget C.int64_t, mode C.int32_t, out *C.uint64_t, errOut **C.char) C.int {
	return guard(errOut, func() error {
		if err := needPtr(out != nil, "output handle"); err != nil {
			return err
		}
		if budget < 0 {
			return invalid("memory_budget must be a positive number of bytes, got %d", int64(budget))
		}
		if mode < C.int32_t(core.ReadAuto) || mode > C.int32_t(core.ReadDisk) {
			return invalid("read mode must be 0 (auto), 1 (memory), 2 (compressed) or 3 (disk), got %d", int32(mode))
		}
		d, err := lookup[*dbHandle](uint64(h), "database")
		if err != nil {
			return err
		}
		if index > math.MaxUint16 {
			return invalid("index must be between 0 and 65535, got %d", uint32(index))
		}
		opts := core.ReaderOptions{MemoryBudget: int64(budget), Mode: core.ReadMode(mode)}
		if opts.MemoryBudget == 0 {
			opts.MemoryBudget = d.budget
		}
		rh, err := openReader(d, uint16(index), opts)
		if err != nil {
			return err
		}
		*out = C.uint64_t(reg.add(rh))
		return nil
	})
}

func readerOf(h C.uint64_t) (*readerHandle, error) { return lookup[*readerHandle](uint64(h), "reader") }

//export hannoy_reader_close
func hannoy_reader_close(h C.uint64_t, errOut **C.char) C.int {
	return guard(errOut, func() error {
		rh, err := readerOf(h)
		if err != nil {
			return err
		}
		reg.remove(uint64(h))
		rh.close()
		return nil
	})
}

//export hannoy_reader_info
func hannoy_reader_info(h C.uint64_t, out **C.char, errOut **C.char) C.int {
	return guard(errOut, func() error {
		rh, err := readerOf(h)
		if err != nil {
			return err
		}
		r := rh.reader
		p := r.Plan()
		var name any
		if rh.db.name != "" {
			name = rh.db.name
		}
		return jsonOut(out, map[string]any{
			"index": r.Index(), "metric": r.Metric().String(), "dimensions": r.Dimensions(),
			"n_items": r.Len(), "entry_points": r.EntryPoints(), "max_level": r.MaxLevel(),
			"version": r.Version().String(), "path": rh.db.entry.path, "name": name,
			"threads": rh.snap.Size(), "kernels": core.KernelImpl(),
			"read_mode": p.Mode.String(), "memory_budget": p.Budget, "memory_budget_source": p.BudgetSource,
			"file_bytes": p.FileBytes, "codes_bytes": p.CodesBytes,
		})
	})
}

func candidatesOf(c *C.uint32_t, n C.int64_t) (*roaring.Bitmap, error) {
	if n < 0 {
		return nil, nil
	}
	if n > 0 && c == nil {
		return nil, invalid("candidates pointer is NULL with %d candidates", int64(n))
	}
	bm := roaring.New()
	if n > 0 {
		bm.AddMany(unsafe.Slice((*uint32)(unsafe.Pointer(c)), int(n)))
	}
	return bm, nil
}

// searchOptions checks the arguments every search takes. linear_below and linear_below_ratio
// have the reference's meaning (0 never scans) and are turned into core's (0 is the default,
// negative never scans).
func searchOptions(k, ef C.uint32_t, linearBelow C.int64_t, ratio C.float) (core.SearchOptions, error) {
	if k < 1 {
		return core.SearchOptions{}, invalid("n must be at least 1, got %d", uint32(k))
	}
	if linearBelow < 0 {
		return core.SearchOptions{}, invalid("linear_below must not be negative, got %d", int64(linearBelow))
	}
	r := float32(ratio)
	if !(r >= 0 && r <= 1) {
		return core.SearchOptions{}, invalid("linear_below_ratio must be between 0 and 1, got %v", r)
	}
	opts := core.SearchOptions{Count: int(k), Ef: int(ef), LinearBelow: -1, LinearBelowRatio: -1}
	if linearBelow > 0 {
		opts.LinearBelow = int(min(int64(linearBelow), math.MaxInt))
	}
	if r > 0 {
		opts.LinearBelowRatio = r
	}
	return opts, nil
}

// filtersOf describes the candidates of a search call: with lens NULL, candidates holds
// nc ids, one filter for every query (nc < 0: none); else lens holds one length per query
// (negative: that query has no filter) and candidates the ids of every filter, one after
// another, nc of them in all. It returns the shared filter, or a function building query i's
// filter (called by the goroutine that searches it, so that the filters are built in parallel).
func filtersOf(c *C.uint32_t, nc C.int64_t, lens *C.int64_t, nq int) (*roaring.Bitmap, func(i int) *roaring.Bitmap, error) {
	if lens == nil {
		bm, err := candidatesOf(c, nc)
		return bm, nil, err
	}
	ls := unsafe.Slice((*int64)(unsafe.Pointer(lens)), nq)
	offsets, err := filterOffsets(ls, int64(nc))
	if err != nil {
		return nil, nil, err
	}
	var ids []uint32
	if nc > 0 {
		if c == nil {
			return nil, nil, invalid("candidates pointer is NULL with %d candidates", int64(nc))
		}
		ids = unsafe.Slice((*uint32)(unsafe.Pointer(c)), int(nc))
	}
	return nil, perQueryFilter(ids, ls, offsets), nil
}

// filterOffsets returns where each per-query filter of lens starts among the candidates, and
// refuses lengths that do not add up to nc.
func filterOffsets(lens []int64, nc int64) ([]int64, error) {
	offsets := make([]int64, len(lens))
	var total int64
	for i, l := range lens {
		offsets[i] = total
		if l > 0 {
			if l > math.MaxInt64-total {
				return nil, invalid("the lengths of the per-query filters overflow")
			}
			total += l
		}
	}
	if total != nc {
		return nil, invalid("the per-query filters hold %d ids in all but n_candidates is %d", total, nc)
	}
	return offsets, nil
}

// perQueryFilter returns the function building query i's filter from ids (nil for a negative
// length: no filter).
func perQueryFilter(ids []uint32, lens, offsets []int64) func(i int) *roaring.Bitmap {
	return func(i int) *roaring.Bitmap {
		if lens[i] < 0 {
			return nil
		}
		bm := roaring.New()
		bm.AddMany(ids[offsets[i] : offsets[i]+lens[i]])
		return bm
	}
}

// fillRow writes one query's results into row i of the outputs, padding the rest.
func fillRow(ids []uint32, dists []float32, k int, i int, res []core.Result) {
	row := ids[i*k : (i+1)*k]
	drow := dists[i*k : (i+1)*k]
	for j := range row {
		if j < len(res) {
			row[j], drow[j] = res[j].ID, res[j].Distance
		} else {
			row[j], drow[j] = math.MaxUint32, float32(math.Inf(1))
		}
	}
}

//export hannoy_reader_search
func hannoy_reader_search(h C.uint64_t, queries *C.float, nq C.uint64_t, dims C.uint32_t, k C.uint32_t, ef C.uint32_t,
	cands *C.uint32_t, nc C.int64_t, lens *C.int64_t, linearBelow C.int64_t, ratio C.float, threads C.int32_t,
	ids *C.uint32_t, dists *C.float, counts *C.uint32_t, errOut **C.char) C.int {
	return guard(errOut, func() error {
		rh, err := readerOf(h)
		if err != nil {
			return err
		}
		opts, err := searchOptions(k, ef, linearBelow, ratio)
		if err != nil {
			return err
		}
		if int(dims) != rh.reader.Dimensions() {
			return fmt.Errorf("queries of %d dimensions for an index of %d: %w", uint32(dims), rh.reader.Dimensions(),
				&core.DimensionError{Expected: rh.reader.Dimensions(), Received: int(dims)})
		}
		if uint64(nq) > math.MaxInt32 || uint64(nq)*uint64(k) > 1<<40 {
			return invalid("too many queries in one call: %d", uint64(nq))
		}
		shared, each, err := filtersOf(cands, nc, lens, int(nq))
		if err != nil {
			return err
		}
		opts.Candidates = shared
		if nq == 0 {
			return nil
		}
		if err := needPtr(queries != nil && ids != nil && dists != nil && counts != nil, "queries or an output buffer"); err != nil {
			return err
		}
		kk, n := int(k), int(nq)
		q := unsafe.Slice((*float32)(unsafe.Pointer(queries)), n*int(dims))
		outIDs := unsafe.Slice((*uint32)(unsafe.Pointer(ids)), n*kk)
		outD := unsafe.Slice((*float32)(unsafe.Pointer(dists)), n*kk)
		outC := unsafe.Slice((*uint32)(unsafe.Pointer(counts)), n)
		fill := func(i int, res []core.Result) {
			fillRow(outIDs, outD, kk, i, res)
			outC[i] = uint32(len(res))
		}
		if n == 1 {
			if each != nil {
				opts.Candidates = each(0)
			}
			return rh.with(func(txn core.Txn) error {
				res, err := rh.reader.Search(txn, q, opts)
				if err == nil {
					fill(0, res)
				}
				return err
			})
		}
		return rh.reader.SearchBatchFiltered(rh.snap, q, n, opts, each, int(threads), fill)
	})
}

// hannoy_reader_search_vec is hannoy_reader_search for one query without candidates, the call
// of by_vec loops, with fewer arguments (each costs the caller a conversion): the query is
// any buffer of dims float32 values (a Python bytes object from struct.pack, a numpy row),
// hence void*; ids and dists hold k results, *count of them filled.
//
//export hannoy_reader_search_vec
func hannoy_reader_search_vec(h C.uint64_t, query unsafe.Pointer, dims C.uint32_t, k C.uint32_t, ef C.uint32_t,
	ids *C.uint32_t, dists *C.float, count *C.uint32_t, errOut **C.char) C.int {
	return guard(errOut, func() error {
		rh, err := readerOf(h)
		if err != nil {
			return err
		}
		if k < 1 {
			return invalid("n must be at least 1, got %d", uint32(k))
		}
		if int(dims) != rh.reader.Dimensions() {
			return fmt.Errorf("queries of %d dimensions for an index of %d: %w", uint32(dims), rh.reader.Dimensions(),
				&core.DimensionError{Expected: rh.reader.Dimensions(), Received: int(dims)})
		}
		if err := needPtr(query != nil && ids != nil && dists != nil && count != nil, "query or an output buffer"); err != nil {
			return err
		}
		q := floatsAt(query, int(dims))
		opts := core.SearchOptions{Count: int(k), Ef: int(ef)}
		return rh.with(func(txn core.Txn) error {
			res, err := rh.reader.Search(txn, q, opts)
			if err != nil {
				return err
			}
			kk := int(k)
			fillRow(unsafe.Slice((*uint32)(unsafe.Pointer(ids)), kk), unsafe.Slice((*float32)(unsafe.Pointer(dists)), kk), kk, 0, res)
			*count = C.uint32_t(len(res))
			return nil
		})
	})
}

//export hannoy_reader_search_items
func hannoy_reader_search_items(h C.uint64_t, items *C.uint32_t, n C.uint64_t, k C.uint32_t, ef C.uint32_t,
	cands *C.uint32_t, nc C.int64_t, lens *C.int64_t, linearBelow C.int64_t, ratio C.float, threads C.int32_t,
	ids *C.uint32_t, dists *C.float, counts *C.int32_t, errOut **C.char) C.int {
	return guard(errOut, func() error {
		rh, err := readerOf(h)
		if err != nil {
			return err
		}
		opts, err := searchOptions(k, ef, linearBelow, ratio)
		if err != nil {
			return err
		}
		if uint64(n) > math.MaxInt32 || uint64(n)*uint64(k) > 1<<40 {
			return invalid("too many items in one call: %d", uint64(n))
		}
		shared, each, err := filtersOf(cands, nc, lens, int(n))
		if err != nil {
			return err
		}
		opts.Candidates = shared
		if n == 0 {
			return nil
		}
		if err := needPtr(items != nil && ids != nil && dists != nil && counts != nil, "items or an output buffer"); err != nil {
			return err
		}
		kk, nn := int(k), int(n)
		its := unsafe.Slice((*uint32)(unsafe.Pointer(items)), nn)
		outIDs := unsafe.Slice((*uint32)(unsafe.Pointer(ids)), nn*kk)
		outD := unsafe.Slice((*float32)(unsafe.Pointer(dists)), nn*kk)
		outC := unsafe.Slice((*int32)(unsafe.Pointer(counts)), nn)
		return rh.reader.SearchItemBatchFiltered(rh.snap, its, opts, each, int(threads), func(i int, res []core.Result, found bool) {
			fillRow(outIDs, outD, kk, i, res)
			if found {
				outC[i] = int32(len(res))
			} else {
				outC[i] = -1
			}
		})
	})
}

//export hannoy_reader_item_vector
func hannoy_reader_item_vector(h C.uint64_t, item C.uint32_t, out *C.float, dims C.uint32_t, found *C.int32_t, errOut **C.char) C.int {
	return guard(errOut, func() error {
		rh, err := readerOf(h)
		if err != nil {
			return err
		}
		if err := needPtr(out != nil, "output vector"); err != nil {
			return err
		}
		if int(dims) != rh.reader.Dimensions() {
			return invalid("the output buffer holds %d values but the index has %d dimensions", uint32(dims), rh.reader.Dimensions())
		}
		return rh.with(func(txn core.Txn) error {
			vec, ok, err := rh.reader.ItemVector(txn, uint32(item))
			if ok {
				copy(unsafe.Slice((*float32)(unsafe.Pointer(out)), int(dims)), vec)
			}
			setI32(found, ok)
			return err
		})
	})
}

//export hannoy_reader_contains
func hannoy_reader_contains(h C.uint64_t, item C.uint32_t, found *C.int32_t, errOut **C.char) C.int {
	return guard(errOut, func() error {
		rh, err := readerOf(h)
		if err != nil {
			return err
		}
		setI32(found, rh.reader.Contains(uint32(item)))
		return nil
	})
}

//export hannoy_reader_len
func hannoy_reader_len(h C.uint64_t, n *C.uint64_t, errOut **C.char) C.int {
	return guard(errOut, func() error {
		rh, err := readerOf(h)
		if err != nil {
			return err
		}
		if err := needPtr(n != nil, "output count"); err != nil {
			return err
		}
		*n = C.uint64_t(rh.reader.Len())
		return nil
	})
}

//export hannoy_reader_item_ids
func hannoy_reader_item_ids(h C.uint64_t, out *C.uint32_t, capacity C.uint64_t, n *C.uint64_t, errOut **C.char) C.int {
	return guard(errOut, func() error {
		rh, err := readerOf(h)
		if err != nil {
			return err
		}
		if err := needPtr(n != nil && (out != nil || capacity == 0), "output buffer or count"); err != nil {
			return err
		}
		ids := rh.reader.ItemIDs()
		*n = C.uint64_t(ids.GetCardinality())
		if capacity == 0 {
			return nil
		}
		dst := unsafe.Slice((*uint32)(unsafe.Pointer(out)), int(min(uint64(capacity), ids.GetCardinality())))
		it := ids.Iterator()
		for i := range dst {
			dst[i] = it.Next()
		}
		return nil
	})
}

func newCancelContext() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}
