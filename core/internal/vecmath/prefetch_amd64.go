//go:build !purego

package vecmath

// prefetch asks the CPU to load the first 256 bytes at p into the cache.
//
//go:noescape
func prefetch(p *byte)

// prefetchRange asks the CPU to load the n bytes at p into the cache, a line at a time.
//
//go:noescape
func prefetchRange(p *byte, n int)
