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
