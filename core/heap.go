package core

import "slices"

// scored is an item id with its distance to a query.
type scored struct {
	dist float32
	id   uint32
}

// before orders by distance, then by id: the order of search results.
func before(a, b scored) bool {
	return a.dist < b.dist || (a.dist == b.dist && a.id < b.id)
}

// pending holds the neighbours of a hop whose distances to the query are computed together
// (Metric.distances): their ids, their values, then the distances.
type pending struct {
	ids   []uint32
	vals  [][]byte
	dists []float32
}

func (p *pending) reset() {
	p.ids, p.vals = p.ids[:0], p.vals[:0]
}

func (p *pending) add(id uint32, v []byte) {
	p.ids = append(p.ids, id)
	p.vals = append(p.vals, v)
}

// compute sets p.dists[i] to the distance from the query q (an encoded value) to p.vals[i].
func (p *pending) compute(m Metric, q []byte) {
	p.dists = slices.Grow(p.dists[:0], len(p.vals))[:len(p.vals)]
	m.distances(q, p.vals, p.dists)
}

// minHeap pops the closest item first; among equal distances the larger id first, like the
// reference's candidate queue.
type minHeap []scored

func (h minHeap) less(i, j int) bool {
	return h[i].dist < h[j].dist || (h[i].dist == h[j].dist && h[i].id > h[j].id)
}

func (h *minHeap) push(s scored) {
	*h = append(*h, s)
	a := *h
	for i := len(a) - 1; i > 0; {
		p := (i - 1) / 2
		if !a.less(i, p) {
			break
		}
		a[i], a[p] = a[p], a[i]
		i = p
	}
}

func (h *minHeap) pop() scored {
	a := *h
	top := a[0]
	n := len(a) - 1
	a[0] = a[n]
	*h = a[:n]
	a = a[:n]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < n && a.less(l, m) {
			m = l
		}
		if r < n && a.less(r, m) {
			m = r
		}
		if m == i {
			break
		}
		a[i], a[m] = a[m], a[i]
		i = m
	}
	return top
}

// maxHeap keeps the worst result on top (largest distance, then largest id), so that a bounded
// result set can drop it.
type maxHeap []scored

func (h maxHeap) less(i, j int) bool { return before(h[j], h[i]) }

func (h *maxHeap) push(s scored) {
	*h = append(*h, s)
	a := *h
	for i := len(a) - 1; i > 0; {
		p := (i - 1) / 2
		if !a.less(i, p) {
			break
		}
		a[i], a[p] = a[p], a[i]
		i = p
	}
}

func (h *maxHeap) pop() scored {
	a := *h
	top := a[0]
	n := len(a) - 1
	a[0] = a[n]
	*h = a[:n]
	h.down(0)
	return top
}

// replaceTop replaces the worst element by s and restores the heap.
func (h *maxHeap) replaceTop(s scored) {
	(*h)[0] = s
	h.down(0)
}

func (h *maxHeap) down(i int) {
	a := *h
	n := len(a)
	for {
		l, r, m := 2*i+1, 2*i+2, i
		if l < n && a.less(l, m) {
			m = l
		}
		if r < n && a.less(r, m) {
			m = r
		}
		if m == i {
			return
		}
		a[i], a[m] = a[m], a[i]
		i = m
	}
}

func (h maxHeap) top() scored { return h[0] }

// sortScored sorts ascending by (distance, id): insertion sort for the short lists of the graph,
// heap order otherwise.
func sortScored(a []scored) {
	if len(a) <= 48 {
		for i := 1; i < len(a); i++ {
			for j := i; j > 0 && before(a[j], a[j-1]); j-- {
				a[j], a[j-1] = a[j-1], a[j]
			}
		}
		return
	}
	h := maxHeap(a)
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
	for n := len(a) - 1; n > 0; n-- {
		a[0], a[n] = a[n], a[0]
		h = h[:n]
		h.down(0)
	}
}
