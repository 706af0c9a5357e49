package core

import (
	"errors"
	"fmt"
)

// Sentinel errors. Errors returned by this package wrap one of these (test with errors.Is) or
// an *lmdb.OpError for failures inside LMDB.
var (
	// ErrInvalidArgument reports a bad argument: a parameter out of range or a malformed input.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrDimensions reports a vector whose length is not the index's dimension count.
	ErrDimensions = errors.New("invalid vector dimensions")
	// ErrMissingMetadata reports an index that has never been built.
	ErrMissingMetadata = errors.New("metadata are missing")
	// ErrNeedBuild reports an index with changes that have not been built yet.
	ErrNeedBuild = errors.New("the graph has not been built after an update")
	// ErrMetricMismatch reports an index stored with another metric than the one asked for.
	ErrMetricMismatch = errors.New("invalid distance provided")
	// ErrCorrupt reports bytes read from the database that do not decode.
	ErrCorrupt = errors.New("corrupt database")
	// ErrCancelled reports a build stopped by its context.
	ErrCancelled = errors.New("the build was cancelled")
	// ErrNotDatabase reports a data file that is not an LMDB database (or is damaged beyond
	// what LMDB can safely open).
	ErrNotDatabase = errors.New("not an LMDB database")
	// ErrClosed reports the use of a closed environment, snapshot or reader.
	ErrClosed = errors.New("closed")
	// ErrDiskFull reports a commit that could not write its pages: the file system is full.
	// The transaction is aborted; the last commit is intact.
	ErrDiskFull = errors.New("the disk is full")
)

// DimensionError is returned when a vector has the wrong number of dimensions.
type DimensionError struct {
	Expected, Received int
}

func (e *DimensionError) Error() string {
	return fmt.Sprintf("invalid vector dimensions: got %d but expected %d", e.Received, e.Expected)
}

// Unwrap makes errors.Is(err, ErrDimensions) true.
func (e *DimensionError) Unwrap() error { return ErrDimensions }

// MetricError is returned when an index is opened with another metric than the stored one.
type MetricError struct {
	Stored, Requested string
}

func (e *MetricError) Error() string {
	return fmt.Sprintf("invalid distance provided: got %q but the index is stored with %q", e.Requested, e.Stored)
}

// Unwrap makes errors.Is(err, ErrMetricMismatch) true.
func (e *MetricError) Unwrap() error { return ErrMetricMismatch }

func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidArgument}, args...)...)
}
