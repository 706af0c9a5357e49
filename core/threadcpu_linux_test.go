package core

import "syscall"

// threadCPU is the CPU time the calling OS thread has used, in nanoseconds (0 if unknown).
// Benchmarks lock their goroutine to its thread and report it per operation: on a machine
// shared with other work it varies less than the elapsed time.
func threadCPU() int64 {
	var ru syscall.Rusage
	if syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru) != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
