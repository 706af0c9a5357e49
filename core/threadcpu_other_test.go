//go:build !linux

package core

// threadCPU is the CPU time of the calling OS thread where it can be had: not here.
func threadCPU() int64 { return 0 }
