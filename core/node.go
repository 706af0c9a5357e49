package core

import (
	"errors"
	"fmt"
)

// The first byte of every node value (the value of an item or links key).
const (
	// TagItem starts an item value: TagItem | header | vector.
	TagItem byte = 0x00
	// TagLinks starts a links value: TagLinks | roaring bitmap of neighbour ids.
	TagLinks byte = 0x01
)

// AppendItemValue appends 0x00 | header | vec (vec = already-encoded codec bytes) to dst.
// header is the distance's header (4 bytes, or 8 for hamming) and vec the vector in its codec's
// bytes; neither is checked.
func AppendItemValue(dst, header, vec []byte) []byte {
	dst = append(dst, TagItem)
	dst = append(dst, header...)
	return append(dst, vec...)
}

// DecodeItemValue splits an item value into its header and vector bytes, both aliasing b.
// headerSize is 4 or 8; wordSize is 4 (f32 codec) or 8 (binary codecs): the remainder after the
// header must be a non-negative multiple of wordSize. An empty value, a links value or another
// tag are errors.
func DecodeItemValue(b []byte, headerSize, wordSize int) (header, vec []byte, err error) {
	if err := nodeCheckTag(b, TagItem); err != nil {
		return nil, nil, err
	}
	if headerSize < 0 || wordSize <= 0 {
		return nil, nil, fmt.Errorf("invalid item decoding: header size %d, word size %d", headerSize, wordSize)
	}
	b = b[1:]
	if len(b) < headerSize {
		return nil, nil, fmt.Errorf("invalid item: %d bytes after the tag, shorter than its %d-byte header", len(b), headerSize)
	}
	header, vec = b[:headerSize:headerSize], b[headerSize:]
	if rem := len(vec) % wordSize; rem != 0 {
		return nil, nil, fmt.Errorf("invalid item: Slice of bytes contains %d too many bytes to be decoded with the %s codec",
			rem, nodeCodecName(wordSize))
	}
	return header, vec, nil
}

// nodeCheckTag checks that the node value b starts with want.
func nodeCheckTag(b []byte, want byte) error {
	if len(b) == 0 {
		return errors.New("invalid node: empty value")
	}
	switch tag := b[0]; {
	case tag == want:
		return nil
	case tag == TagLinks:
		return errors.New("invalid node: expected an item, found links")
	case tag == TagItem:
		return errors.New("invalid node: expected links, found an item")
	default:
		return fmt.Errorf("invalid node: unknown tag %d", tag)
	}
}

// nodeCodecName names the vector codec of a word size the way upstream's size-mismatch error does.
func nodeCodecName(wordSize int) string {
	if wordSize == 4 {
		return "f32"
	}
	return "binary"
}
