package core

import (
	"encoding/binary"
	"fmt"
)

// Version is the format version stored under the version key of a built index.
type Version struct{ Major, Minor, Patch uint32 }

// FormatVersion is the version written by every build: the hannoy release whose format this
// package writes.
var FormatVersion = Version{0, 1, 3}

// String returns "major.minor.patch", e.g. "0.1.3".
func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

// Append appends the 12 encoded bytes of v to dst: major, minor, patch, each u32 BE.
func (v Version) Append(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, v.Major)
	dst = binary.BigEndian.AppendUint32(dst, v.Minor)
	return binary.BigEndian.AppendUint32(dst, v.Patch)
}

// DecodeVersion decodes a version value, which must be exactly 12 bytes.
func DecodeVersion(b []byte) (Version, error) {
	if len(b) != 12 {
		return Version{}, fmt.Errorf("invalid version: %d bytes, expected 12", len(b))
	}
	return Version{
		Major: binary.BigEndian.Uint32(b),
		Minor: binary.BigEndian.Uint32(b[4:]),
		Patch: binary.BigEndian.Uint32(b[8:]),
	}, nil
}
