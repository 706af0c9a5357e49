package core

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"

	"github.com/RoaringBitmap/roaring/v2"
)

// codecFuzzBitmaps returns seed serializations: hannoy's own and roaring/v2 ones with runs.
func codecFuzzBitmaps(t testing.TB) [][]byte {
	var seeds [][]byte
	for _, ids := range [][]uint32{nil, {0}, {1, 42}, {0, 1 << 16, 2 << 16, 3 << 16, 0xFFFFFFFF}} {
		b, err := AppendRoaring(nil, ids)
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	runs := roaring.New()
	runs.AddRange(0, 100)
	small := roaring.New()
	for i := uint32(0); i < 4100; i++ {
		small.Add(i * 3)
	}
	mixed := roaring.New()
	mixed.AddRange(10, 20)
	mixed.Add(1 << 16)
	mixed.AddRange(2<<16, 2<<16+5)
	mixed.Add(3<<16 + 9)
	mixed.RunOptimize()
	for _, bm := range []*roaring.Bitmap{runs, small, mixed} {
		b, err := bm.ToBytes()
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	return seeds
}

// codecCheckIDs fails unless ids are strictly ascending.
func codecCheckIDs(t *testing.T, ids []uint32) {
	t.Helper()
	for i := 1; i < len(ids); i++ {
		if ids[i] <= ids[i-1] {
			t.Fatalf("decoded ids not strictly ascending at %d: %d after %d", i, ids[i], ids[i-1])
		}
	}
}

// codecCheckRoaringRoundTrip re-encodes decoded ids and checks the result against the input
// (identical when the input has no run containers) and against roaring/v2.
func codecCheckRoaringRoundTrip(t *testing.T, in []byte, ids []uint32) {
	t.Helper()
	codecCheckIDs(t, ids)
	enc, err := AppendRoaring(nil, ids)
	if err != nil {
		t.Fatalf("re-encoding: %v", err)
	}
	if binary.LittleEndian.Uint32(in) == roaringCookieNoRuns && !bytes.Equal(enc, in) {
		t.Fatalf("no-run input is not canonical:\n in %x\nout %x", codecTrim(in), codecTrim(enc))
	}
	again, n, err := DecodeRoaring(enc, nil)
	if err != nil || n != len(enc) || !codecSameIDs(again, ids) {
		t.Fatalf("decoding the re-encoded bitmap: n=%d of %d, %v", n, len(enc), err)
	}
	bm := roaring.New()
	if err := bm.UnmarshalBinary(in); err != nil || !codecSameIDs(bm.ToArray(), ids) {
		t.Fatalf("roaring/v2 reads the input differently: %v", err)
	}
}

func FuzzDecodeKey(f *testing.F) {
	for _, k := range []Key{MetadataKey(0), VersionKey(3), UpdatedKey(1, 5), LinksKey(0x102, 0xFFFFFFFF, 42), ItemKey(65535, 7)} {
		f.Add(k.Bytes())
	}
	f.Add([]byte{0, 0, 4, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := DecodeKey(b)
		if err != nil {
			return
		}
		if enc := k.Bytes(); !bytes.Equal(enc, b) {
			t.Fatalf("DecodeKey(%x) = %+v, which encodes to %x", b, k, enc)
		}
		if k2, err := DecodeKey(k.Bytes()); err != nil || k2 != k {
			t.Fatalf("second decode: %+v, %v", k2, err)
		}
	})
}

func FuzzDecodeItemValue(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x3f, 0, 0, 0, 0x40}, false, false)
	f.Add([]byte{0, 0xbd, 0x1b, 0x0f, 0x40, 0, 0, 0x80, 0x3f, 0, 0, 0, 0x40}, false, false)
	f.Add(append(make([]byte, 17), 0xab), true, true)
	f.Add([]byte{1, 0x3a, 0x30, 0, 0, 0, 0, 0, 0}, false, false)
	f.Add([]byte{}, false, true)
	f.Fuzz(func(t *testing.T, b []byte, bigHeader, binaryCodec bool) {
		headerSize, wordSize := 4, 4
		if bigHeader {
			headerSize = 8
		}
		if binaryCodec {
			wordSize = 8
		}
		h, v, err := DecodeItemValue(b, headerSize, wordSize)
		if err != nil {
			return
		}
		if len(h) != headerSize || len(v)%wordSize != 0 {
			t.Fatalf("header %d bytes, vector %d bytes", len(h), len(v))
		}
		enc := AppendItemValue(nil, h, v)
		if !bytes.Equal(enc, b) {
			t.Fatalf("re-encoded %x, input %x", enc, b)
		}
		h2, v2, err := DecodeItemValue(enc, headerSize, wordSize)
		if err != nil || !bytes.Equal(h2, h) || !bytes.Equal(v2, v) {
			t.Fatalf("second decode: %x %x %v", h2, v2, err)
		}
	})
}

func FuzzDecodeLinksValue(f *testing.F) {
	for _, b := range codecFuzzBitmaps(f) {
		f.Add(append([]byte{TagLinks}, b...))
	}
	f.Add([]byte{})
	f.Add([]byte{TagItem, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		ids, err := DecodeLinksValue(b, nil)
		if err != nil {
			return
		}
		codecCheckRoaringRoundTrip(t, b[1:], ids)
		enc, err := AppendLinksValue(nil, ids)
		if err != nil {
			t.Fatal(err)
		}
		if again, err := DecodeLinksValue(enc, make([]uint32, 0, len(ids))); err != nil || !codecSameIDs(again, ids) {
			t.Fatalf("second decode: %v", err)
		}
	})
}

func FuzzDecodeRoaring(f *testing.F) {
	for _, b := range codecFuzzBitmaps(f) {
		f.Add(b)
		f.Add(append(slices.Clip(b), 1, 2, 3))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ids, n, err := DecodeRoaring(b, []uint32{0xdead})
		// The bitmap decoder accepts exactly the same bytes (but no limit) and the same ids.
		bm, bn, berr := DecodeRoaringBitmap(b)
		if (berr == nil) != (err == nil) && !(berr == nil && bm.GetCardinality() > RoaringMaxIDs) {
			t.Fatalf("DecodeRoaring: %v, DecodeRoaringBitmap: %v", err, berr)
		}
		if err == nil && (bn != n || !slices.Equal(bm.ToArray(), ids[1:])) {
			t.Fatalf("DecodeRoaringBitmap read %d bytes and %d ids, DecodeRoaring %d and %d", bn, bm.GetCardinality(), n, len(ids)-1)
		}
		if err != nil {
			if n != 0 || len(ids) != 1 || ids[0] != 0xdead {
				t.Fatalf("on error: n=%d, ids %v", n, ids)
			}
			return
		}
		if n < 8 || n > len(b) || ids[0] != 0xdead {
			t.Fatalf("n=%d of %d bytes", n, len(b))
		}
		codecCheckRoaringRoundTrip(t, b[:n], ids[1:])
	})
}

func FuzzDecodeMetadata(f *testing.F) {
	for _, m := range []*Metadata{
		{Distance: "euclidean", Dimensions: 3, Items: roaring.BitmapOf(0), EntryPoints: []uint32{0}, MaxLevel: 1},
		{Distance: "tamo", Dimensions: 12, Items: roaring.BitmapOf(0, 1, 2, 3, 99), EntryPoints: []uint32{1, 2, 3, 4}, MaxLevel: 42},
		{Distance: "binary quantized cosine", Dimensions: 1000, Items: roaring.New()},
	} {
		b, err := m.Append(nil)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)-1-4*len(m.EntryPoints)])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMetadata(b)
		if err != nil {
			return
		}
		enc, err := m.Append(nil)
		if err != nil {
			// Only unsorted entry points are representable on disk but not re-encodable.
			if slices.IsSorted(m.EntryPoints) && len(slices.Compact(slices.Clone(m.EntryPoints))) == len(m.EntryPoints) {
				t.Fatalf("re-encoding %+v: %v", m, err)
			}
			return
		}
		m2, err := DecodeMetadata(enc)
		if err != nil {
			t.Fatalf("decoding the re-encoded metadata: %v", err)
		}
		if m2.Distance != m.Distance || m2.Dimensions != m.Dimensions || m2.MaxLevel != m.MaxLevel ||
			!codecSameIDs(m2.EntryPoints, m.EntryPoints) || !m2.Items.Equals(m.Items) {
			t.Fatalf("round trip: %+v != %+v", m2, m)
		}
	})
}

func FuzzDecodeVersion(f *testing.F) {
	f.Add(FormatVersion.Append(nil))
	f.Add(Version{0, 10, 100}.Append(nil))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := DecodeVersion(b)
		if err != nil {
			return
		}
		if enc := v.Append(nil); !bytes.Equal(enc, b) {
			t.Fatalf("DecodeVersion(%x) = %v, which encodes to %x", b, v, enc)
		}
		if v2, err := DecodeVersion(v.Append(nil)); err != nil || v2 != v {
			t.Fatalf("second decode: %v, %v", v2, err)
		}
	})
}

func FuzzDecodeUpdateStatus(f *testing.F) {
	f.Add(StatusUpdated.Bytes())
	f.Add(StatusRemoved.Bytes())
	f.Add([]byte{2})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeUpdateStatus(b)
		if err != nil {
			return
		}
		if enc := s.Bytes(); !bytes.Equal(enc, b) {
			t.Fatalf("DecodeUpdateStatus(%x) = %d, which encodes to %x", b, s, enc)
		}
		if s2, err := DecodeUpdateStatus(s.Bytes()); err != nil || s2 != s {
			t.Fatalf("second decode: %d, %v", s2, err)
		}
	})
}
