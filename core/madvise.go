package core

import (
	"bufio"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

// Kernel advice for a range of the memory map (madvise(2)).
const (
	adviceNormal   = 0 // MADV_NORMAL: read around each fault (what the kernel does unless told)
	adviceRandom   = 1 // MADV_RANDOM: read only the page of each fault (LMDB's MDB_NORDAHEAD)
	adviceWillNeed = 3 // MADV_WILLNEED: start reading the range now, without waiting
)

var pageSize = uintptr(os.Getpagesize())

// advise gives the kernel advice for the pages that hold [start, start+n). Errors are ignored:
// advice is a hint.
func advise(start, n uintptr, advice int) {
	if n == 0 {
		return
	}
	aligned, length := pageSpan(start, n)
	_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, aligned, length, uintptr(advice))
}

// pageSpan is the whole pages that hold [start, start+n): their first address and length.
func pageSpan(start, n uintptr) (aligned, length uintptr) {
	aligned = start &^ (pageSize - 1)
	return aligned, (start - aligned + n + pageSize - 1) &^ (pageSize - 1)
}

// willNeedChunk is the most one MADV_WILLNEED call is asked to read: the kernel reads no more
// than the device's read-ahead maximum per call (read_ahead_kb), and silently drops the rest.
const willNeedChunk = 2 << 20

// willNeedWindow is how much a background warm-up (willNeedPaced) keeps asked for and not yet
// read: a search that faults meanwhile waits behind at most this much of it.
const willNeedWindow = 8 << 20

// residentWait is the longest willNeedPaced waits for one chunk before asking for the next: the
// kernel may drop or skip a read-ahead under memory pressure.
const residentWait = time.Second

// willNeedPaced asks the kernel to read [start, start+n) in the background, in calls of
// willNeedChunk bytes, for a warm-up that runs beside searches. Asked for all at once, a whole
// file's read-ahead fills the device's queue, and every search that faults on a page not yet
// read waits behind it (on a 712 MiB file, the first 300 queries after a cold start ran about
// 10% slower that way). So it keeps at most willNeedWindow bytes in flight, asking for the next
// chunk once the oldest one is in memory (mincore(2)).
func willNeedPaced(start, n uintptr) {
	var pending []uintptr // chunks asked for and not seen in memory yet, oldest first
	vec := make([]byte, willNeedChunk/pageSize)
	for off := uintptr(0); off < n; off += willNeedChunk {
		for len(pending) > 0 && uintptr(len(pending))*willNeedChunk >= willNeedWindow {
			if !waitResident(pending[0], min(willNeedChunk, start+n-pending[0]), vec) {
				return // the map is gone
			}
			pending = pending[1:]
		}
		advise(start+off, min(willNeedChunk, n-off), adviceWillNeed)
		pending = append(pending, start+off)
	}
}

// waitResident waits until every page of [start, start+n) is in memory, or residentWait has
// passed. It reports false if mincore fails (the range is no longer mapped).
func waitResident(start, n uintptr, vec []byte) bool {
	aligned, length := pageSpan(start, n)
	pages := int(length / pageSize)
	if pages > len(vec) {
		vec = make([]byte, pages)
	}
	deadline := time.Now().Add(residentWait)
	for wait := 200 * time.Microsecond; ; wait = min(2*wait, 5*time.Millisecond) {
		if mincore(aligned, length, vec) != nil {
			return false
		}
		if !slices.ContainsFunc(vec[:pages], func(b byte) bool { return b&1 == 0 }) || time.Now().After(deadline) {
			return true
		}
		time.Sleep(wait)
	}
}

// mincore sets vec[i]&1 for each page of [start, start+length) in memory (mincore(2)); start
// is page-aligned and vec holds a byte a page.
func mincore(start, length uintptr, vec []byte) error {
	if _, _, errno := syscall.Syscall(syscall.SYS_MINCORE, start, length, uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		return errno
	}
	return nil
}

// adviseBytes advises the pages that hold b.
func adviseBytes(b []byte, advice int) {
	if len(b) > 0 {
		advise(uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), advice)
	}
}

// fileMapping finds where the file at path is mapped into this process (its largest mapping,
// matched by device and inode): LMDB maps data.mdb once, at an address it does not export.
func fileMapping(path string) (start, length uintptr, ok bool) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, 0, false
	}
	sys, okSys := st.Sys().(*syscall.Stat_t)
	if !okSys {
		return 0, 0, false
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// start-end perms offset major:minor inode path
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[3] == "00:00" {
			continue
		}
		inode, err := strconv.ParseUint(fields[4], 10, 64)
		if err != nil || inode != sys.Ino {
			continue
		}
		major, minor, _ := strings.Cut(fields[3], ":")
		maj, err1 := strconv.ParseUint(major, 16, 32)
		mnr, err2 := strconv.ParseUint(minor, 16, 32)
		if err1 != nil || err2 != nil || !sameDevice(uint64(sys.Dev), maj, mnr) {
			continue
		}
		lo, hi, found := strings.Cut(fields[0], "-")
		a, err1 := strconv.ParseUint(lo, 16, 64)
		b, err2 := strconv.ParseUint(hi, 16, 64)
		if !found || err1 != nil || err2 != nil || b <= a {
			continue
		}
		if uintptr(b-a) > length {
			start, length, ok = uintptr(a), uintptr(b-a), true
		}
	}
	return start, length, ok
}

// sameDevice compares a stat device number with the major:minor pair of /proc/self/maps.
func sameDevice(dev, major, minor uint64) bool {
	// Linux's new_encode_dev layout, as glibc's gnu_dev_major/minor decode it.
	maj := (dev>>8)&0xfff | (dev>>32)&^0xfff
	mnr := dev&0xff | (dev>>12)&^0xff
	return maj == major && mnr == minor
}

// scanAhead is how far ahead of a scan's position the kernel is asked to be reading.
const scanAhead = 32 << 20

// readAhead keeps the kernel reading ahead of a scan that moves mostly forward through the file
// (a map opened MDB_NORDAHEAD reads one page a fault otherwise), as far ahead as the scan has
// moved forward since its last jump: the pages of a B-tree many commits rewrote lie scattered
// in the file (GloVe-50's links after 11 chunked commits), and reading far ahead of each jump
// read mostly pages the scan did not want, pushing out of a small page cache those it did.
type readAhead struct {
	start, end uintptr // the used part of the file in the map
	lo, hi     uintptr // [lo, hi) has been asked for; lo is where the scan last jumped to
	ahead      uintptr // the most asked for ahead of the scan
}

// scanAheadMin is what readAhead asks for after a jump: 16 pages.
const scanAheadMin = 64 << 10

// newReadAhead prepares read-ahead for the first used bytes of the data file at path, keeping
// up to scanAhead bytes in flight but no more than a sixteenth of budget (pages read too far
// ahead under a tight memory limit are dropped before the scan reaches them); nil if the
// mapping cannot be found (then at does nothing).
func newReadAhead(path string, used, budget int64) *readAhead {
	start, length, ok := fileMapping(path)
	if !ok {
		return nil
	}
	ahead := uintptr(max(min(scanAhead, budget/16), willNeedChunk))
	return &readAhead{start: start, end: start + min(length, uintptr(used)), ahead: ahead}
}

// at tells that the scan is reading b; it keeps the read-ahead beyond it in flight.
func (ra *readAhead) at(b []byte) {
	if ra == nil || len(b) == 0 {
		return
	}
	a := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	if a < ra.start || a >= ra.end {
		return // a page of the write transaction, or outside the file
	}
	if a < ra.lo || a > ra.hi {
		ra.lo = a &^ (pageSize - 1) // a jump: start again from here
		ra.hi = ra.lo
	}
	win := min(max(2*(a-ra.lo), scanAheadMin), ra.ahead)
	if ra.hi >= min(a+win/2, ra.end) {
		return // more than half the window still in flight: ask again once less is
	}
	for to := min(a+win, ra.end); ra.hi < to; {
		n := min(willNeedChunk, to-ra.hi)
		advise(ra.hi, n, adviceWillNeed)
		ra.hi += n
	}
}
