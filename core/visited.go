package core

// visitedSet is a set of item ids that is cleared in O(1): an open-addressing hash table whose
// slots hold (generation << 32 | id), a slot of an older generation being empty. Any uint32 id
// works, dense or not.
type visitedSet struct {
	slots []uint64
	gen   uint64
	n     int
}

func newVisitedSet(capacity int) *visitedSet {
	size := 64
	for size < 2*capacity {
		size *= 2
	}
	return &visitedSet{slots: make([]uint64, size), gen: 1}
}

// reset empties the set.
func (s *visitedSet) reset() {
	s.gen++
	s.n = 0
	if s.gen == 1<<32 {
		clear(s.slots)
		s.gen = 1
	}
}

func hash32(id uint32) uint32 { return id * 0x9E3779B1 }

// insert adds id and reports whether it was absent.
func (s *visitedSet) insert(id uint32) bool {
	if 2*(s.n+1) > len(s.slots) {
		s.grow()
	}
	mask := uint32(len(s.slots) - 1)
	want := s.gen<<32 | uint64(id)
	for i := hash32(id) & mask; ; i = (i + 1) & mask {
		v := s.slots[i]
		if v == want {
			return false
		}
		if v>>32 != s.gen {
			s.slots[i] = want
			s.n++
			return true
		}
	}
}

// contains reports whether id is in the set.
func (s *visitedSet) contains(id uint32) bool {
	mask := uint32(len(s.slots) - 1)
	want := s.gen<<32 | uint64(id)
	for i := hash32(id) & mask; ; i = (i + 1) & mask {
		v := s.slots[i]
		if v == want {
			return true
		}
		if v>>32 != s.gen {
			return false
		}
	}
}

func (s *visitedSet) grow() {
	old := s.slots
	s.slots = make([]uint64, 2*len(old))
	mask := uint32(len(s.slots) - 1)
	for _, v := range old {
		if v>>32 != s.gen {
			continue
		}
		for i := hash32(uint32(v)) & mask; ; i = (i + 1) & mask {
			if s.slots[i]>>32 != s.gen {
				s.slots[i] = v
				break
			}
		}
	}
}

// visitedIDs is the visited set of a reader's searches: one bit per id below a bound fixed when
// the reader opens (its largest item), and a visitedSet for any id beyond. An insert is one load
// and one store; reset clears only the words that were set, so both cost nothing that grows
// with the index. With no bound (sparse ids) every id goes to the visitedSet.
type visitedIDs struct {
	words   []uint64
	touched []uint32 // indexes of the words set since the last reset
	sparse  *visitedSet
}

// maxVisitedBits bounds the bitset (8 MiB a search in flight); larger ids use the hash set.
const maxVisitedBits = 1 << 26

// newVisitedIDs sizes a set for ids up to maxID among n items: a bitset if they are dense
// enough (see denseIDs) and at most maxVisitedBits.
func newVisitedIDs(maxID uint32, n uint64) *visitedIDs {
	s := &visitedIDs{sparse: newVisitedSet(64)}
	if n > 0 && denseIDs(maxID, n) && uint64(maxID) < maxVisitedBits {
		s.words = make([]uint64, maxID/64+1)
	}
	return s
}

// reset empties the set.
func (s *visitedIDs) reset() {
	for _, w := range s.touched {
		s.words[w] = 0
	}
	s.touched = s.touched[:0]
	s.sparse.reset()
}

// insert adds id and reports whether it was absent.
func (s *visitedIDs) insert(id uint32) bool {
	w := id >> 6
	if int(w) >= len(s.words) {
		return s.sparse.insert(id)
	}
	old := s.words[w]
	bit := uint64(1) << (id & 63)
	if old&bit != 0 {
		return false
	}
	if old == 0 {
		s.touched = append(s.touched, w)
	}
	s.words[w] = old | bit
	return true
}

// contains reports whether id is in the set.
func (s *visitedIDs) contains(id uint32) bool {
	w := id >> 6
	if int(w) >= len(s.words) {
		return s.sparse.contains(id)
	}
	return s.words[w]&(1<<(id&63)) != 0
}
