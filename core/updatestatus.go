package core

import "fmt"

// UpdateStatus is the value of a tombstone (updated key): what happened to the item since the
// last build.
type UpdateStatus uint8

// The two tombstone values.
const (
	// StatusUpdated marks an item added or overwritten.
	StatusUpdated UpdateStatus = 0
	// StatusRemoved marks an item deleted.
	StatusRemoved UpdateStatus = 1
)

// Bytes returns the one-byte encoding of s.
func (s UpdateStatus) Bytes() []byte { return []byte{byte(s)} }

// DecodeUpdateStatus decodes a tombstone value: exactly one byte, 0 or 1. (hannoy <= 0.1.2 wrote
// empty values, which hannoy 0.1.3 rejects too.)
func DecodeUpdateStatus(b []byte) (UpdateStatus, error) {
	if len(b) != 1 {
		return 0, fmt.Errorf("invalid update status decoding: %d bytes, expected 1", len(b))
	}
	if s := UpdateStatus(b[0]); s == StatusUpdated || s == StatusRemoved {
		return s, nil
	}
	return 0, fmt.Errorf("invalid update status decoding: unknown value %d", b[0])
}
