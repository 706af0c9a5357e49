package core

import (
	"encoding/binary"
	"fmt"
)

// Mode is the kind of entry a key addresses (hannoy's NodeMode). The values are part of the
// on-disk format.
type Mode uint8

// The four key modes, in their on-disk order.
const (
	// ModeMetadata addresses the metadata and version entries of an index.
	ModeMetadata Mode = 0
	// ModeUpdated addresses the tombstone of an item added, overwritten or deleted since the last build.
	ModeUpdated Mode = 1
	// ModeLinks addresses the neighbours of an item on one layer.
	ModeLinks Mode = 2
	// ModeItem addresses the vector of an item.
	ModeItem Mode = 3
)

// String returns the name of the mode ("Metadata", "Updated", "Links", "Item"), or "Mode(N)"
// for a value outside the format.
func (m Mode) String() string {
	switch m {
	case ModeMetadata:
		return "Metadata"
	case ModeUpdated:
		return "Updated"
	case ModeLinks:
		return "Links"
	case ModeItem:
		return "Item"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// KeySize is the length of every encoded key.
const KeySize = 8

// Key is the key of an LMDB entry: index u16 BE | mode u8 | item u32 BE | layer u8. Encoded
// keys sort (memcmp) by index, then mode, then item, then layer.
type Key struct {
	Index uint16
	Mode  Mode
	Item  uint32
	Layer uint8
}

// Append appends the 8 encoded bytes of k to dst.
func (k Key) Append(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, k.Index)
	dst = append(dst, byte(k.Mode))
	dst = binary.BigEndian.AppendUint32(dst, k.Item)
	return append(dst, k.Layer)
}

// Bytes returns the 8 encoded bytes of k.
func (k Key) Bytes() []byte { return k.Append(make([]byte, 0, KeySize)) }

// DecodeKey decodes an 8-byte key. It fails on any other length and on an unknown mode.
func DecodeKey(b []byte) (Key, error) {
	if len(b) != KeySize {
		return Key{}, fmt.Errorf("invalid key: %d bytes, expected %d", len(b), KeySize)
	}
	if b[2] > byte(ModeItem) {
		return Key{}, fmt.Errorf("invalid key: could not convert %d as a NodeMode", b[2])
	}
	return Key{
		Index: binary.BigEndian.Uint16(b),
		Mode:  Mode(b[2]),
		Item:  binary.BigEndian.Uint32(b[3:]),
		Layer: b[7],
	}, nil
}

// MetadataKey is the key of the metadata of an index: (index, metadata, 0, 0).
func MetadataKey(index uint16) Key { return Key{Index: index, Mode: ModeMetadata} }

// VersionKey is the key of the format version of an index: (index, metadata, 1, 0).
func VersionKey(index uint16) Key { return Key{Index: index, Mode: ModeMetadata, Item: 1} }

// UpdatedKey is the key of the tombstone of item: (index, updated, item, 0).
func UpdatedKey(index uint16, item uint32) Key {
	return Key{Index: index, Mode: ModeUpdated, Item: item}
}

// LinksKey is the key of the neighbours of item on layer: (index, links, item, layer).
func LinksKey(index uint16, item uint32, layer uint8) Key {
	return Key{Index: index, Mode: ModeLinks, Item: item, Layer: layer}
}

// ItemKey is the key of the vector of item: (index, item mode, item, 0).
func ItemKey(index uint16, item uint32) Key { return Key{Index: index, Mode: ModeItem, Item: item} }

// IndexPrefix returns the 2-byte prefix shared by every key of index. Its capacity is KeySize,
// so a caller can append the rest of a key without reallocating.
func IndexPrefix(index uint16) []byte {
	return binary.BigEndian.AppendUint16(make([]byte, 0, KeySize), index)
}

// ModePrefix returns the 3-byte prefix shared by every key of index with the given mode.
func ModePrefix(index uint16, mode Mode) []byte { return append(IndexPrefix(index), byte(mode)) }
