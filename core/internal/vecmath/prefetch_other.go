//go:build !amd64 || purego

package vecmath

func prefetch(p *byte) {}

func prefetchRange(p *byte, n int) {}
