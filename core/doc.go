// Package core is the hannoy engine: an HNSW graph for approximate nearest-neighbour search,
// stored in LMDB in the on-disk format of the Rust crate hannoy 0.1.3.
//
// One LMDB database holds many independent indexes (numbered by a uint16). Items are identified
// by a uint32 and carry a vector of fixed dimensions. A Writer adds, overwrites and deletes items
// inside a write transaction; Build links what changed into the graph (in parallel, on every core,
// rewriting only the links that change); a Reader searches a built index.
//
// The files are named after what they hold:
//
//	key.go, node.go, links.go, metadata.go, version.go, updatestatus.go   on-disk codecs
//	metric.go                        the seven metrics: codecs, headers, distances
//	env.go, txn.go                   LMDB environments, databases and transactions
//	writemap.go                      MDB_WRITEMAP for files larger than a quarter of the budget:
//	                                 the switch, the blocks reserved ahead of LMDB, the file's length
//	writer.go                        adding, deleting and reading items before a build
//	build.go                         the HNSW build: options, progress, its steps in order, metadata
//	build_worker.go                  build workers: vector and link access, layer search, selection
//	graph.go                         the build's in-memory nodes and id tables
//	insert.go                        inserting new and overwritten items, in batches under a memory limit
//	repair.go                        repairing the links of deleted items
//	writelinks.go                    writing the changed links back
//	reachability.go                  reconnecting orphaned items, making layer 0 reachable
//	levels.go                        level assignment
//	reader.go, search.go             opening an index (its read mode, its caches) and searching it
//	codes.go                         8-bit codes and preloaded links for indexes larger than memory
//	membudget.go                     the memory budget: cgroup v1/v2 limits, MemAvailable; the Go
//	                                 heap limit during builds
//	madvise.go                       kernel advice for the memory map: read-ahead, WILLNEED
//	heap.go, visited.go              search data structures
//	prefetch.go                      the HANNOY_READER_PREFETCH_MEMORY warm-up hint
//	indexes.go                       listing the built indexes of a database; the kernels in use
//	norm.go                          the cosine norm, summed like the reference's kernel
//	envcheck.go, verify.go           checking LMDB's meta pages at open; walking every page (Verify)
//	errors.go                        error values
package core
