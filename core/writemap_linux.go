//go:build linux

package core

import (
	"golang.org/x/sys/unix"
)

// fallocate reserves the blocks of [off, off+n) of the file (fallocate(2), mode 0).
func fallocate(fd int, off, n int64) error {
	for {
		err := unix.Fallocate(fd, 0, off, n)
		if err != unix.EINTR {
			return err
		}
	}
}

// lockExclusive takes the exclusive fcntl lock on the first byte of an LMDB lock file, which
// LMDB takes at open to learn whether it is alone and otherwise waits for with a shared one. It
// fails while another process has the environment open. Locks of fcntl belong to the process:
// ours upgrades the shared lock LMDB holds, and closing any descriptor of the file drops it.
func lockExclusive(fd int) bool { return lockFirstByte(fd, unix.F_WRLCK) }

// lockShared turns the lock lockExclusive took back into the shared lock LMDB holds while the
// environment is open.
func lockShared(fd int) { lockFirstByte(fd, unix.F_RDLCK) }

// lockFirstByte sets the process's fcntl lock on the first byte of fd without waiting.
func lockFirstByte(fd int, typ int16) bool {
	lk := unix.Flock_t{Type: typ, Whence: 0, Start: 0, Len: 1}
	for {
		err := unix.FcntlFlock(uintptr(fd), unix.F_SETLK, &lk)
		if err != unix.EINTR {
			return err == nil
		}
	}
}
