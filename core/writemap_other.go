//go:build !linux

package core

import "errors"

// fallocate is not used off Linux: environments there keep LMDB's own dirty pages.
func fallocate(fd int, off, n int64) error { return errors.ErrUnsupported }

func lockExclusive(fd int) bool { return false }

func lockShared(fd int) {}
