//go:build !purego

package vecmath

// prefetch asks the CPU to load the first 256 bytes at p into the cache.
//
//go:noescape
func prefetch(p *byte)
