package core

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"

	"github.com/RoaringBitmap/roaring/v2"
)

// A links value is TagLinks followed by a roaring bitmap of neighbour ids in the portable
// serialization (https://github.com/RoaringBitmap/RoaringFormatSpec). The encoder writes what
// roaring-rs 0.10 serialize_into and Go roaring/v2 WriteTo (of a bitmap built with Add) write:
//
//	cookie 12346 u32 LE | container count u32 LE
//	per container: key (high 16 bits) u16 LE | cardinality-1 u16 LE
//	per container: offset of its payload from the bitmap start, u32 LE
//	per container: array (cardinality <= 4096: sorted low 16 bits, u16 LE each)
//	               or bitmap (1024 u64 LE words, bit v set for low bits v)
//
// The decoder also reads the run format (cookie 12347 in the low 16 bits, container count-1 in
// the high 16 bits, then a bitset marking run containers, then the descriptions, then offsets
// only when there are at least 4 containers; a run container is n_runs u16 LE followed by
// (start, length-1) u16 LE pairs).
const (
	roaringCookieNoRuns  = 12346
	roaringCookieRuns    = 12347
	roaringNoOffsetLimit = 4     // run format: offsets only with at least this many containers
	roaringArrayMax      = 4096  // largest cardinality stored as an array container
	roaringBitmapBytes   = 8192  // payload of a bitmap container
	roaringMaxContainers = 65536 // one per possible high 16 bits
)

// AppendLinksValue appends 0x01 | roaring bitmap of ids to dst. ids must be sorted ascending
// and unique; otherwise it returns an error and dst unchanged.
func AppendLinksValue(dst []byte, ids []uint32) ([]byte, error) {
	out, err := AppendRoaring(append(dst, TagLinks), ids)
	if err != nil {
		return dst, err
	}
	return out, nil
}

// DecodeLinksValue checks the tag and decodes the bitmap, appending its ids ascending to dst.
// It does not allocate when dst has the capacity. Bytes after the bitmap are an error. On error
// it returns dst unchanged.
func DecodeLinksValue(b []byte, dst []uint32) ([]uint32, error) {
	if err := nodeCheckTag(b, TagLinks); err != nil {
		return dst, err
	}
	out, n, err := DecodeRoaring(b[1:], dst)
	if err != nil {
		return dst, fmt.Errorf("invalid links: %w", err)
	}
	if n != len(b)-1 {
		return dst, fmt.Errorf("invalid links: %d bytes after the bitmap", len(b)-1-n)
	}
	return out, nil
}

// roaringContainer describes one container while encoding.
type roaringContainer struct {
	key  uint16
	card uint32 // 1..65536
}

// roaringCount extends conts (the containers seen so far) with the sorted ids.
func roaringCount(conts []roaringContainer, ids []uint32) []roaringContainer {
	for _, id := range ids {
		if k := uint16(id >> 16); len(conts) > 0 && conts[len(conts)-1].key == k {
			conts[len(conts)-1].card++
		} else {
			conts = append(conts, roaringContainer{key: k, card: 1})
		}
	}
	return conts
}

// roaringPayloadSize is the size of the payload of a container of card values (no runs).
func roaringPayloadSize(card uint32) int {
	if card > roaringArrayMax {
		return roaringBitmapBytes
	}
	return 2 * int(card)
}

// roaringAppendHeader appends the cookie, count, descriptions and offsets of the no-run format,
// after making room in dst for the whole serialization.
func roaringAppendHeader(dst []byte, conts []roaringContainer) []byte {
	size := 8 + 8*len(conts)
	for _, c := range conts {
		size += roaringPayloadSize(c.card)
	}
	dst = slices.Grow(dst, size)
	dst = binary.LittleEndian.AppendUint32(dst, roaringCookieNoRuns)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(conts)))
	for _, c := range conts {
		dst = binary.LittleEndian.AppendUint16(dst, c.key)
		dst = binary.LittleEndian.AppendUint16(dst, uint16(c.card-1))
	}
	off := 8 + 8*len(conts)
	for _, c := range conts {
		dst = binary.LittleEndian.AppendUint32(dst, uint32(off))
		off += roaringPayloadSize(c.card)
	}
	return dst
}

// roaringAppendContainer appends the payload of one container: ids share their high 16 bits
// and are ascending.
func roaringAppendContainer(dst []byte, ids []uint32) []byte {
	n := len(dst)
	if len(ids) > roaringArrayMax {
		dst = append(dst, make([]byte, roaringBitmapBytes)...)
		words := dst[n:]
		for _, id := range ids {
			lo := uint16(id)
			words[lo>>3] |= 1 << (lo & 7)
		}
		return dst
	}
	dst = slices.Grow(dst, 2*len(ids))[:n+2*len(ids)]
	out := dst[n:]
	for i, id := range ids {
		binary.LittleEndian.PutUint16(out[2*i:], uint16(id))
	}
	return dst
}

// AppendRoaring appends the roaring serialization (no-run format) of ids to dst, without a tag.
// ids must be sorted ascending and unique; otherwise it returns an error and dst unchanged.
func AppendRoaring(dst []byte, ids []uint32) ([]byte, error) {
	for i := 1; i < len(ids); i++ {
		if ids[i] <= ids[i-1] {
			return dst, fmt.Errorf("roaring encoding: ids not strictly ascending at position %d (%d after %d)", i, ids[i], ids[i-1])
		}
	}
	var stack [8]roaringContainer
	conts := roaringCount(stack[:0], ids)
	dst = roaringAppendHeader(dst, conts)
	for _, c := range conts {
		dst = roaringAppendContainer(dst, ids[:c.card])
		ids = ids[c.card:]
	}
	return dst, nil
}

// AppendRoaringBitmap appends the serialization of bm (nil = empty) in the no-run format: the
// same bytes as AppendRoaring of its ids, whatever containers bm holds in memory.
func AppendRoaringBitmap(dst []byte, bm *roaring.Bitmap) []byte {
	if bm == nil {
		bm = roaring.New()
	}
	var chunk [1024]uint32
	var conts []roaringContainer
	for it := bm.ManyIterator(); ; {
		n := it.NextMany(chunk[:])
		if n == 0 {
			break
		}
		conts = roaringCount(conts, chunk[:n])
	}
	dst = roaringAppendHeader(dst, conts)
	var pending []uint32 // the ids of the current container
	for it := bm.ManyIterator(); ; {
		n := it.NextMany(chunk[:])
		if n == 0 {
			break
		}
		for _, id := range chunk[:n] {
			if len(pending) > 0 && pending[0]>>16 != id>>16 {
				dst = roaringAppendContainer(dst, pending)
				pending = pending[:0]
			}
			pending = append(pending, id)
		}
	}
	if len(pending) > 0 {
		dst = roaringAppendContainer(dst, pending)
	}
	return dst
}

// roaringDesc is the parsed description of one serialized container.
type roaringDesc struct {
	key  uint16
	card int  // declared cardinality, 1..65536
	run  bool // run container
	pos  int  // start of the payload in the input
}

// DecodeRoaring decodes a roaring bitmap in the portable format (with or without run
// containers) at the start of b, appends its ids ascending to dst, and returns the number of
// bytes it consumed; bytes after the bitmap are left to the caller. The input is fully
// validated (lengths, ascending keys and values, cardinalities, popcounts, runs, offsets). It
// does not allocate when dst has room for the ids. On error it returns dst unchanged and n = 0.
//
// The ids appended are the bitmap's content: at most 32 per input byte without run containers,
// up to 16384 per input byte with them (hannoy never writes run containers). A bitmap of more
// than RoaringMaxIDs ids is refused, so that a few damaged bytes cannot ask for gigabytes;
// DecodeRoaringBitmap has no such limit.
func DecodeRoaring(b []byte, dst []uint32) (ids []uint32, n int, err error) {
	var stack [8]roaringDesc
	descs, n, total, err := roaringParse(b, stack[:0])
	if err != nil {
		return dst, 0, fmt.Errorf("invalid roaring bitmap: %w", err)
	}
	declared := 0
	for i := range descs {
		declared += descs[i].card
	}
	if declared > RoaringMaxIDs {
		return dst, 0, fmt.Errorf("invalid roaring bitmap: %d ids, more than the %d a list may hold", declared, RoaringMaxIDs)
	}
	ids = dst
	if cap(ids)-len(ids) < total {
		ids = make([]uint32, len(dst), len(dst)+total)
		copy(ids, dst)
	}
	for i := range descs {
		if ids, err = roaringDecodeContainer(b, &descs[i], ids); err != nil {
			return dst, 0, fmt.Errorf("invalid roaring bitmap: container %d (key %d): %w", i, descs[i].key, err)
		}
	}
	return ids, n, nil
}

// RoaringMaxIDs is the most ids DecodeRoaring (and so a neighbour list) decodes: 16 times the
// largest M0 a build accepts.
const RoaringMaxIDs = 1 << 21

// DecodeRoaringBitmap decodes and validates a portable roaring bitmap like DecodeRoaring, into
// a roaring.Bitmap, one container at a time: runs stay runs, so memory stays in proportion to
// the input whatever the cardinality.
func DecodeRoaringBitmap(b []byte) (*roaring.Bitmap, int, error) {
	var stack [8]roaringDesc
	descs, n, _, err := roaringParse(b, stack[:0])
	if err != nil {
		return nil, 0, fmt.Errorf("invalid roaring bitmap: %w", err)
	}
	bm := roaring.New()
	var scratch []uint32
	for i := range descs {
		d := &descs[i]
		if !d.run {
			if scratch, err = roaringDecodeContainer(b, d, scratch[:0]); err != nil {
				return nil, 0, fmt.Errorf("invalid roaring bitmap: container %d (key %d): %w", i, d.key, err)
			}
			bm.AddMany(scratch)
			continue
		}
		runs, err := roaringRuns(b, d)
		if err != nil {
			return nil, 0, fmt.Errorf("invalid roaring bitmap: container %d (key %d): %w", i, d.key, err)
		}
		high := uint64(d.key) << 16
		for _, r := range runs {
			bm.AddRange(high+uint64(r[0]), high+uint64(r[0]+r[1]))
		}
	}
	return bm, n, nil
}

// roaringRuns validates the runs of run container d: (start, length) pairs, ascending, not
// overlapping, inside 16 bits, adding up to the declared cardinality.
func roaringRuns(b []byte, d *roaringDesc) ([][2]int, error) {
	p := b[d.pos:]
	nRuns := int(binary.LittleEndian.Uint16(p))
	runs := make([][2]int, 0, nRuns)
	card, next := 0, 0 // next: smallest value the next run may start at
	for i := 0; i < nRuns; i++ {
		start := int(binary.LittleEndian.Uint16(p[2+4*i:]))
		length := int(binary.LittleEndian.Uint16(p[4+4*i:])) + 1
		if start < next {
			return nil, fmt.Errorf("run %d starts at %d, overlapping or unsorted", i, start)
		}
		if start+length > 1<<16 {
			return nil, fmt.Errorf("run %d (start %d, length %d) overflows 16 bits", i, start, length)
		}
		if card += length; card > d.card {
			return nil, fmt.Errorf("runs hold more than the declared cardinality %d", d.card)
		}
		runs = append(runs, [2]int{start, length})
		next = start + length
	}
	if card != d.card {
		return nil, fmt.Errorf("runs hold %d values, declared cardinality %d", card, d.card)
	}
	return runs, nil
}

// roaringParse reads the header of b and walks the container payloads, checking that everything
// fits in b and that the offsets (if any) match. It returns the containers, the size of the
// serialization and the total cardinality of its array and bitmap containers.
func roaringParse(b []byte, descs []roaringDesc) (_ []roaringDesc, n, total int, err error) {
	if len(b) < 4 {
		return nil, 0, 0, fmt.Errorf("truncated cookie (%d bytes)", len(b))
	}
	var count, pos int
	var runFlags []byte
	switch cookie := binary.LittleEndian.Uint32(b); {
	case cookie == roaringCookieNoRuns:
		if len(b) < 8 {
			return nil, 0, 0, errors.New("truncated container count")
		}
		c := binary.LittleEndian.Uint32(b[4:])
		if c > roaringMaxContainers {
			return nil, 0, 0, fmt.Errorf("%d containers, at most %d are possible", c, roaringMaxContainers)
		}
		count, pos = int(c), 8
	case cookie&0xFFFF == roaringCookieRuns:
		count = int(cookie>>16) + 1
		flagBytes := (count + 7) / 8
		if len(b) < 4+flagBytes {
			return nil, 0, 0, errors.New("truncated run-container bitset")
		}
		runFlags, pos = b[4:4+flagBytes], 4+flagBytes
	default:
		return nil, 0, 0, fmt.Errorf("unknown cookie %#x", cookie)
	}
	withOffsets := runFlags == nil || count >= roaringNoOffsetLimit
	headerLen := 4 * count
	if withOffsets {
		headerLen *= 2
	}
	// Every container has a non-empty payload of at least 2 bytes, so this bounds count by the
	// input size before anything is allocated.
	if len(b)-pos < headerLen+2*count {
		return nil, 0, 0, fmt.Errorf("%d containers do not fit in %d bytes", count, len(b))
	}
	descBytes := b[pos : pos+4*count]
	offsets := b[pos+4*count : pos+headerLen]
	pos += headerLen
	if cap(descs) < count {
		descs = make([]roaringDesc, 0, count)
	}
	for i := 0; i < count; i++ {
		d := roaringDesc{
			key:  binary.LittleEndian.Uint16(descBytes[4*i:]),
			card: int(binary.LittleEndian.Uint16(descBytes[4*i+2:])) + 1,
			run:  runFlags != nil && runFlags[i/8]&(1<<(i%8)) != 0,
			pos:  pos,
		}
		if i > 0 && d.key <= descs[i-1].key {
			return nil, 0, 0, fmt.Errorf("container %d: key %d not above the previous key %d", i, d.key, descs[i-1].key)
		}
		if withOffsets {
			if off := binary.LittleEndian.Uint32(offsets[4*i:]); int64(off) != int64(pos) {
				return nil, 0, 0, fmt.Errorf("container %d: offset %d, but its payload starts at %d", i, off, pos)
			}
		}
		size := 0
		switch {
		case d.run:
			if len(b)-pos < 2 {
				return nil, 0, 0, fmt.Errorf("container %d: truncated run count", i)
			}
			size = 2 + 4*int(binary.LittleEndian.Uint16(b[pos:]))
		case d.card > roaringArrayMax:
			size = roaringBitmapBytes
		default:
			size = 2 * d.card
		}
		if len(b)-pos < size {
			return nil, 0, 0, fmt.Errorf("container %d: truncated payload (%d bytes, %d left)", i, size, len(b)-pos)
		}
		pos += size
		if !d.run { // backed by its payload; a run container's cardinality is checked when decoded
			total += d.card
		}
		descs = append(descs, d)
	}
	return descs, pos, total, nil
}

// roaringDecodeContainer validates the payload of d and appends its ids to dst.
func roaringDecodeContainer(b []byte, d *roaringDesc, dst []uint32) ([]uint32, error) {
	high := uint32(d.key) << 16
	p := b[d.pos:]
	switch {
	case d.run: // hannoy never writes run containers: allocating here is fine
		runs, err := roaringRuns(b, d)
		if err != nil {
			return dst, err
		}
		for _, r := range runs {
			for v := r[0]; v < r[0]+r[1]; v++ {
				dst = append(dst, high|uint32(v))
			}
		}
	case d.card > roaringArrayMax:
		card := 0
		for w := 0; w < roaringBitmapBytes/8; w++ {
			word := binary.LittleEndian.Uint64(p[8*w:])
			if card += bits.OnesCount64(word); card > d.card {
				return dst, fmt.Errorf("bitmap holds more than the declared cardinality %d", d.card)
			}
			for base := high | uint32(w*64); word != 0; word &= word - 1 {
				dst = append(dst, base|uint32(bits.TrailingZeros64(word)))
			}
		}
		if card != d.card {
			return dst, fmt.Errorf("bitmap holds %d values, declared cardinality %d", card, d.card)
		}
	default:
		vals := p[:2*d.card]
		dst = slices.Grow(dst, d.card)
		out := dst[len(dst) : len(dst)+d.card]
		prev := -1
		for i := range out {
			v := int(binary.LittleEndian.Uint16(vals[2*i:]))
			if v <= prev {
				return dst, fmt.Errorf("array value %d at position %d not above the previous value %d", v, i, prev)
			}
			out[i] = high | uint32(v)
			prev = v
		}
		dst = dst[:len(dst)+d.card]
	}
	return dst, nil
}
