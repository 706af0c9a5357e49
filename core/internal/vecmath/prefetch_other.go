//go:build !amd64 || purego

package vecmath

func prefetch(p *byte) {}
