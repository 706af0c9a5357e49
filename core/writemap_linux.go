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
func lockExclusive(fd int) bool {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 1}
	for {
		err := unix.FcntlFlock(uintptr(fd), unix.F_SETLK, &lk)
		if err != unix.EINTR {
			return err == nil
		}
	}
}

// lockShared turns the lock lockExclusive took back into the shared lock LMDB holds while the
// environment is open.
func lockShared(fd int) {
	lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: 0, Start: 0, Len: 1}
	for unix.FcntlFlock(uintptr(fd), unix.F_SETLK, &lk) == unix.EINTR {
	}
}
