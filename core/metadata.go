package core

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/RoaringBitmap/roaring/v2"
)

// Metadata is the value of the metadata key of a built index:
//
//	distance name (UTF-8, no NUL) | 0x00 | dimensions u32 BE | items_len u32 BE
//	| items: roaring bitmap of items_len bytes | entry points, u32 LE each | max level u8
type Metadata struct {
	Distance    string          // e.g. "euclidean", "binary quantized cosine"
	Dimensions  uint32          // the user's dimension count (not padded for binary codecs)
	Items       *roaring.Bitmap // every item of the built index; nil encodes as empty
	EntryPoints []uint32        // the nodes of the top layer, strictly ascending
	MaxLevel    uint8           // the top layer
}

// Append appends the encoded metadata to dst. It fails (returning dst unchanged) if the
// distance name contains a NUL byte or is not valid UTF-8, or if the entry points are not
// strictly ascending.
func (m *Metadata) Append(dst []byte) ([]byte, error) {
	if i := strings.IndexByte(m.Distance, 0); i >= 0 {
		return dst, fmt.Errorf("metadata encoding: distance name %q contains a NUL byte at %d", m.Distance, i)
	}
	if !utf8.ValidString(m.Distance) {
		return dst, fmt.Errorf("metadata encoding: distance name %q is not valid UTF-8", m.Distance)
	}
	for i := 1; i < len(m.EntryPoints); i++ {
		if m.EntryPoints[i] <= m.EntryPoints[i-1] {
			return dst, fmt.Errorf("metadata encoding: entry points not strictly ascending at position %d (%d after %d)",
				i, m.EntryPoints[i], m.EntryPoints[i-1])
		}
	}
	out := append(dst, m.Distance...)
	out = append(out, 0)
	out = binary.BigEndian.AppendUint32(out, m.Dimensions)
	lenAt := len(out)
	out = append(out, 0, 0, 0, 0)
	out = AppendRoaringBitmap(out, m.Items)
	itemsLen := len(out) - lenAt - 4
	if uint64(itemsLen) > 1<<32-1 {
		return dst, fmt.Errorf("metadata encoding: items bitmap of %d bytes does not fit a u32 length", itemsLen)
	}
	binary.BigEndian.PutUint32(out[lenAt:], uint32(itemsLen))
	for _, ep := range m.EntryPoints {
		out = binary.LittleEndian.AppendUint32(out, ep)
	}
	return append(out, m.MaxLevel), nil
}

// DecodeMetadata decodes a metadata value. Like hannoy 0.1.3 it accepts a value that ends right
// after the items bitmap (no entry points, max level 0), and ignores a trailing partial 4-byte
// entry point. The name must be valid UTF-8 and items_len must be exactly the size of the bitmap.
func DecodeMetadata(b []byte) (*Metadata, error) {
	nul := bytes.IndexByte(b, 0)
	if nul < 0 {
		return nil, errors.New("invalid metadata: no NUL byte after the distance name")
	}
	if !utf8.Valid(b[:nul]) {
		return nil, fmt.Errorf("invalid metadata: distance name %q is not valid UTF-8", b[:nul])
	}
	m := &Metadata{Distance: string(b[:nul])}
	rest := b[nul+1:]
	if len(rest) < 8 {
		return nil, fmt.Errorf("invalid metadata: %d bytes after the distance name, need 8 for dimensions and items length", len(rest))
	}
	m.Dimensions = binary.BigEndian.Uint32(rest)
	itemsLen := binary.BigEndian.Uint32(rest[4:])
	rest = rest[8:]
	if uint64(itemsLen) > uint64(len(rest)) {
		return nil, fmt.Errorf("invalid metadata: items bitmap of %d bytes, only %d left", itemsLen, len(rest))
	}
	items, n, err := DecodeRoaringBitmap(rest[:itemsLen])
	if err != nil {
		return nil, fmt.Errorf("invalid metadata: items: %w", err)
	}
	if n != int(itemsLen) {
		return nil, fmt.Errorf("invalid metadata: items_len is %d but the bitmap takes %d bytes", itemsLen, n)
	}
	m.Items = items
	rest = rest[itemsLen:]
	if len(rest) == 0 {
		return m, nil
	}
	eps := rest[:len(rest)-1]
	m.MaxLevel = rest[len(rest)-1]
	if len(eps) >= 4 {
		m.EntryPoints = make([]uint32, len(eps)/4)
		for i := range m.EntryPoints {
			m.EntryPoints[i] = binary.LittleEndian.Uint32(eps[4*i:])
		}
	}
	return m, nil
}
