package core

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/RoaringBitmap/roaring/v2"
)

// codecHex decodes a hex string, ignoring spaces and '|' separators.
func codecHex(t testing.TB, s string) []byte {
	t.Helper()
	s = strings.NewReplacer(" ", "", "|", "", "\n", "", "\t", "").Replace(s)
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

func TestCodecKeyGolden(t *testing.T) {
	tests := []struct {
		name string
		key  Key
		want string
	}{
		{"metadata", MetadataKey(0), "0000 00 00000000 00"},
		{"version", VersionKey(7), "0007 00 00000001 00"},
		{"updated", UpdatedKey(1, 5), "0001 01 00000005 00"},
		{"links", LinksKey(0x0102, 0x0a0b0c0d, 42), "0102 02 0a0b0c0d 2a"},
		{"item", ItemKey(0xffff, math.MaxUint32), "ffff 03 ffffffff 00"},
		{"item u32::MAX-1", ItemKey(0, math.MaxUint32-1), "0000 03 fffffffe 00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := codecHex(t, tt.want)
			if got := tt.key.Bytes(); !bytes.Equal(got, want) || len(got) != KeySize {
				t.Fatalf("Bytes() = %x, want %x", got, want)
			}
			if got := tt.key.Append([]byte{0xaa}); !bytes.Equal(got, append([]byte{0xaa}, want...)) {
				t.Fatalf("Append = %x", got)
			}
			k, err := DecodeKey(want)
			if err != nil || k != tt.key {
				t.Fatalf("DecodeKey = %+v, %v; want %+v", k, err, tt.key)
			}
		})
	}
	if got := IndexPrefix(0x0102); !bytes.Equal(got, []byte{1, 2}) {
		t.Fatalf("IndexPrefix = %x", got)
	}
	if got := ModePrefix(0x0102, ModeLinks); !bytes.Equal(got, []byte{1, 2, 2}) {
		t.Fatalf("ModePrefix = %x", got)
	}
	if !bytes.HasPrefix(LinksKey(0x0102, 9, 3).Bytes(), ModePrefix(0x0102, ModeLinks)) {
		t.Fatal("links key does not start with its mode prefix")
	}
}

// TestCodecKeyOrdering mirrors hannoy's node_id.rs::check_node_id_ordering on encoded keys.
func TestCodecKeyOrdering(t *testing.T) {
	tests := []struct {
		name string
		a, b Key // a < b
	}{
		{"item 0 < item 1", ItemKey(0, 0), ItemKey(0, 1)},
		{"links(0,0) < links(1,0)", LinksKey(0, 0, 0), LinksKey(0, 1, 0)},
		{"links(0,0) < links(0,1)", LinksKey(0, 0, 0), LinksKey(0, 0, 1)},
		{"links(0,1) < links(1,0)", LinksKey(0, 0, 1), LinksKey(0, 1, 0)},
		{"updated 0 < updated 1", UpdatedKey(0, 0), UpdatedKey(0, 1)},
		{"links(MAX,0) < item(0)", LinksKey(0, math.MaxUint32, 0), ItemKey(0, 0)},
		{"links(MAX,255) < item(0)", LinksKey(0, math.MaxUint32, 255), ItemKey(0, 0)},
		{"metadata < links(0,0)", MetadataKey(0), LinksKey(0, 0, 0)},
		{"metadata < updated(0)", MetadataKey(0), UpdatedKey(0, 0)},
		{"metadata < item(0)", MetadataKey(0), ItemKey(0, 0)},
		{"metadata < version", MetadataKey(0), VersionKey(0)},
		{"version < updated(0)", VersionKey(0), UpdatedKey(0, 0)},
		{"updated(MAX) < links(0,0)", UpdatedKey(0, math.MaxUint32), LinksKey(0, 0, 0)},
		{"item 256 > item 255 (BE)", ItemKey(0, 255), ItemKey(0, 256)},
		{"index 0 item MAX < index 1 metadata", ItemKey(0, math.MaxUint32), MetadataKey(1)},
		{"index 255 < index 256 (BE)", ItemKey(255, 0), MetadataKey(256)},
	}
	for _, tt := range tests {
		if bytes.Compare(tt.a.Bytes(), tt.b.Bytes()) >= 0 {
			t.Errorf("%s: %x not below %x", tt.name, tt.a.Bytes(), tt.b.Bytes())
		}
	}
	if !bytes.Equal(ItemKey(0, 0).Bytes(), ItemKey(0, 0).Bytes()) {
		t.Error("equal keys differ")
	}
}

func TestCodecKeyErrors(t *testing.T) {
	for _, b := range [][]byte{nil, make([]byte, 7), make([]byte, 9), codecHex(t, "0000 04 00000000 00"), codecHex(t, "0000 ff 00000000 00")} {
		if k, err := DecodeKey(b); err == nil {
			t.Errorf("DecodeKey(%x) = %+v, want an error", b, k)
		}
	}
	names := map[Mode]string{ModeMetadata: "Metadata", ModeUpdated: "Updated", ModeLinks: "Links", ModeItem: "Item", 9: "Mode(9)"}
	for m, want := range names {
		if m.String() != want {
			t.Errorf("Mode(%d).String() = %q, want %q", uint8(m), m.String(), want)
		}
	}
}

func TestCodecItemValue(t *testing.T) {
	f32s := func(v ...float32) []byte {
		var b []byte
		for _, x := range v {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
		}
		return b
	}
	tests := []struct {
		name   string
		header []byte
		vec    []byte
		want   string
	}{
		{"euclidean [0,1,2]", f32s(0), f32s(0, 1, 2), "00 | 00000000 | 00000000 0000803f 00000040"},
		{"cosine [1,2]", f32s(float32(math.Sqrt(5))), f32s(1, 2), "00 | bd1b0f40 | 0000803f 00000040"},
		{"empty vector", f32s(0), nil, "00 | 00000000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := codecHex(t, tt.want)
			got := AppendItemValue(nil, tt.header, tt.vec)
			if !bytes.Equal(got, want) {
				t.Fatalf("AppendItemValue = %x, want %x", got, want)
			}
			h, v, err := DecodeItemValue(got, 4, 4)
			if err != nil || !bytes.Equal(h, tt.header) || !bytes.Equal(v, tt.vec) {
				t.Fatalf("DecodeItemValue = %x, %x, %v", h, v, err)
			}
			if len(v) > 0 && &v[0] != &got[5] {
				t.Fatal("decoded vector does not alias the value")
			}
		})
	}
	// hamming: 8-byte header, one 64-bit word.
	val := AppendItemValue(nil, make([]byte, 8), []byte{0xab, 0, 0, 0, 0, 0, 0, 0})
	if h, v, err := DecodeItemValue(val, 8, 8); err != nil || len(h) != 8 || len(v) != 8 {
		t.Fatalf("hamming decode = %x, %x, %v", h, v, err)
	}

	bad := []struct {
		name             string
		value            string
		header, wordSize int
		want             string
	}{
		{"empty", "", 4, 4, "invalid node: empty value"},
		{"links", "01 3a300000 00000000", 4, 4, "expected an item, found links"},
		{"unknown tag", "02 00000000", 4, 4, "unknown tag 2"},
		{"short header", "00 0000", 4, 4, "header"},
		{"f32 remainder", "00 00000000 0000803f 0000", 4, 4, "Slice of bytes contains 2 too many bytes to be decoded with the f32 codec"},
		{"binary remainder", "00 00000000 00000000 0000803f", 8, 8, "contains 4 too many bytes to be decoded with the binary codec"},
		{"bad word size", "00 00000000", 4, 0, "word size"},
	}
	for _, tt := range bad {
		if h, v, err := DecodeItemValue(codecHex(t, tt.value), tt.header, tt.wordSize); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: DecodeItemValue = %x, %x, %v; want error containing %q", tt.name, h, v, err, tt.want)
		}
	}
}

func TestCodecLinksGolden(t *testing.T) {
	tests := []struct {
		ids  []uint32
		want string
	}{
		{nil, "01 3a300000 00000000"},
		{[]uint32{1, 42}, "01 3a300000 01000000 0000 0100 10000000 0100 2a00"},
		{[]uint32{0}, "01 3a300000 01000000 0000 0000 10000000 0000"},
	}
	for _, tt := range tests {
		want := codecHex(t, tt.want)
		got, err := AppendLinksValue([]byte{}, tt.ids)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("AppendLinksValue(%v) = %x, %v; want %x", tt.ids, got, err, want)
		}
		ids, err := DecodeLinksValue(want, nil)
		if err != nil || !slices.Equal(ids, tt.ids) {
			t.Fatalf("DecodeLinksValue(%x) = %v, %v", want, ids, err)
		}
	}
}

// codecIDSets returns named id sets covering every container shape of the no-run format.
func codecIDSets() map[string][]uint32 {
	seq := func(from, n, step uint32) []uint32 {
		ids := make([]uint32, n)
		for i := range ids {
			ids[i] = from + uint32(i)*step
		}
		return ids
	}
	r := rand.New(rand.NewPCG(1, 2))
	random := func(n int, max uint32) []uint32 {
		set := map[uint32]bool{}
		for len(set) < n {
			set[r.Uint32N(max)] = true
		}
		ids := make([]uint32, 0, n)
		for id := range set {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		return ids
	}
	sets := map[string][]uint32{
		"empty":                   nil,
		"zero":                    {0},
		"one-42":                  {1, 42},
		"max":                     {math.MaxUint32},
		"5000 even (bitmap)":      seq(0, 5000, 2),
		"4096 (largest array)":    seq(0, 4096, 1),
		"4097 (smallest bitmap)":  seq(0, 4097, 1),
		"full container":          seq(0x30000, 65536, 1),
		"many containers and max": append(seq(0, 300, 1<<16-7), math.MaxUint32),
		"random sparse":           random(1000, math.MaxUint32),
		"random dense":            random(20000, 3<<16),
		"random mixed":            append(random(6000, 1<<16), seq(5<<16, 40, 977)...),
		"32 links":                random(32, 1<<20),
	}
	for i := range 20 {
		sets["random small "+string(rune('a'+i))] = random(1+r.IntN(64), 1+r.Uint32N(math.MaxUint32))
	}
	return sets
}

func TestCodecRoaringMatchesGoRoaring(t *testing.T) {
	for name, ids := range codecIDSets() {
		t.Run(name, func(t *testing.T) {
			bm := roaring.New()
			for _, id := range ids {
				bm.Add(id)
			}
			want := codecNaiveRoaring(ids)
			if goBytes, err := bm.ToBytes(); err != nil {
				t.Fatal(err)
			} else if name == "full container" {
				// roaring/v2 turns a full container into a run container even with Add.
				if binary.LittleEndian.Uint16(goBytes) != roaringCookieRuns {
					t.Fatalf("roaring/v2 no longer writes a full container as a run")
				}
			} else if !bytes.Equal(goBytes, want) {
				t.Fatalf("reference encoder differs from roaring/v2 WriteTo:\n got %x\nwant %x", codecTrim(want), codecTrim(goBytes))
			}
			got, err := AppendRoaring(nil, ids)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("AppendRoaring differs from roaring/v2 WriteTo (err %v):\n got %x\nwant %x", err, codecTrim(got), codecTrim(want))
			}
			if got := AppendRoaringBitmap(nil, bm); !bytes.Equal(got, want) {
				t.Fatalf("AppendRoaringBitmap differs:\n got %x\nwant %x", codecTrim(got), codecTrim(want))
			}
			links, err := AppendLinksValue(nil, ids)
			if err != nil || links[0] != TagLinks || !bytes.Equal(links[1:], want) {
				t.Fatalf("AppendLinksValue = %x, %v", codecTrim(links), err)
			}
			dec, n, err := DecodeRoaring(append(slices.Clip(want), 0xee), []uint32{7})
			if err != nil || n != len(want) || dec[0] != 7 || !codecSameIDs(dec[1:], ids) {
				t.Fatalf("DecodeRoaring: n=%d (want %d), err %v, ids equal %v", n, len(want), err, codecSameIDs(dec[1:], ids))
			}
			dec, err = DecodeLinksValue(links, nil)
			if err != nil || !codecSameIDs(dec, ids) {
				t.Fatalf("DecodeLinksValue: %v", err)
			}
			back := roaring.New() // roaring/v2 reads our bytes back
			if err := back.UnmarshalBinary(got); err != nil || !codecSameIDs(back.ToArray(), ids) {
				t.Fatalf("roaring/v2 cannot read our bytes back: %v", err)
			}
		})
	}
}

// codecNaiveRoaring is a straightforward reference of the no-run serialization roaring-rs 0.10
// writes (roaring/v2 writes the same bytes except that it turns full containers into runs).
func codecNaiveRoaring(ids []uint32) []byte {
	var keys []uint16
	lows := map[uint16][]uint16{}
	for _, id := range ids {
		k := uint16(id >> 16)
		if _, ok := lows[k]; !ok {
			keys = append(keys, k)
		}
		lows[k] = append(lows[k], uint16(id))
	}
	b := binary.LittleEndian.AppendUint32(nil, 12346)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(keys)))
	for _, k := range keys {
		b = binary.LittleEndian.AppendUint16(b, k)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(lows[k])-1))
	}
	var payload []byte
	for _, k := range keys {
		b = binary.LittleEndian.AppendUint32(b, uint32(8+8*len(keys)+len(payload)))
		if l := lows[k]; len(l) <= 4096 {
			for _, v := range l {
				payload = binary.LittleEndian.AppendUint16(payload, v)
			}
		} else {
			var words [1024]uint64
			for _, v := range l {
				words[v/64] |= 1 << (v % 64)
			}
			for _, w := range words {
				payload = binary.LittleEndian.AppendUint64(payload, w)
			}
		}
	}
	return append(b, payload...)
}

// codecSameIDs compares id lists, treating nil and empty as equal.
func codecSameIDs(a, b []uint32) bool { return len(a) == len(b) && (len(a) == 0 || slices.Equal(a, b)) }

// codecTrim shortens long byte strings in failure messages.
func codecTrim(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// TestCodecDecodeRoaringRuns reads roaring/v2 output with run containers (cookie 12347), with
// and without offsets, mixed with array and bitmap containers.
func TestCodecDecodeRoaringRuns(t *testing.T) {
	tests := []struct {
		name  string
		build func(bm *roaring.Bitmap)
		opt   bool // RunOptimize
	}{
		{"AddRange 0..100", func(bm *roaring.Bitmap) { bm.AddRange(0, 100) }, false},
		{"AddRange full container", func(bm *roaring.Bitmap) { bm.AddRange(1<<16, 2<<16) }, false},
		{"AddRange across containers", func(bm *roaring.Bitmap) { bm.AddRange(65000, 400000) }, false},
		{"AddRange to u32 max", func(bm *roaring.Bitmap) { bm.AddRange(math.MaxUint32-70000, math.MaxUint32+1) }, false},
		{"ranges in 3 containers (no offsets)", func(bm *roaring.Bitmap) {
			bm.AddRange(10, 20)
			bm.AddRange(1<<16+5, 1<<16+9)
			bm.AddRange(3<<16, 3<<16+1)
		}, true},
		{"runs, arrays and bitmaps in 6 containers (offsets)", func(bm *roaring.Bitmap) {
			bm.AddRange(0, 50)
			bm.AddRange(60, 61)
			bm.AddRange(70, 5000)
			for i := uint32(0); i < 10; i++ {
				bm.Add(1<<16 + 3*i)
			}
			for i := uint32(0); i < 6000; i++ {
				bm.Add(2<<16 + 7*i)
			}
			bm.AddRange(3<<16, 3<<16+3)
			bm.Add(9 << 16)
			bm.AddRange(math.MaxUint32-3, math.MaxUint32+1)
		}, true},
		{"optimized dense", func(bm *roaring.Bitmap) {
			for i := uint32(0); i < 100000; i++ {
				if i%1000 < 900 {
					bm.Add(i)
				}
			}
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bm := roaring.New()
			tt.build(bm)
			if tt.opt {
				bm.RunOptimize()
			}
			b, err := bm.ToBytes()
			if err != nil {
				t.Fatal(err)
			}
			if binary.LittleEndian.Uint16(b) != roaringCookieRuns {
				t.Fatalf("test bitmap has no run container (cookie %x)", b[:4])
			}
			ids, n, err := DecodeRoaring(b, nil)
			if err != nil || n != len(b) {
				t.Fatalf("DecodeRoaring: n=%d of %d, %v", n, len(b), err)
			}
			if want := bm.ToArray(); !slices.Equal(ids, want) {
				t.Fatalf("decoded %d ids, want %d", len(ids), len(want))
			}
			// Re-encoding writes the no-run format, as roaring-rs would.
			if got := AppendRoaringBitmap(nil, bm); !bytes.Equal(got, codecNaiveRoaring(ids)) {
				t.Fatalf("AppendRoaringBitmap of a run bitmap differs from the no-run bytes")
			}
		})
	}
}

// codecRoaringBuild assembles a serialization by hand for the corruption tests.
type codecRoaringBuild struct {
	runs    bool
	count   int      // containers in the header
	flags   []byte   // run-container bitset (run format)
	desc    []uint16 // key, card-1 pairs
	offsets []uint32 // nil: computed; written when the format needs them
	payload [][]uint16
}

func (c codecRoaringBuild) bytes() []byte {
	var b []byte
	if c.runs {
		b = binary.LittleEndian.AppendUint32(b, roaringCookieRuns|uint32(c.count-1)<<16)
		b = append(b, c.flags...)
	} else {
		b = binary.LittleEndian.AppendUint32(b, roaringCookieNoRuns)
		b = binary.LittleEndian.AppendUint32(b, uint32(c.count))
	}
	for _, v := range c.desc {
		b = binary.LittleEndian.AppendUint16(b, v)
	}
	if !c.runs || c.count >= roaringNoOffsetLimit {
		offs := c.offsets
		if offs == nil {
			off := len(b) + 4*len(c.payload)
			for _, p := range c.payload {
				offs = append(offs, uint32(off))
				off += 2 * len(p)
			}
		}
		for _, o := range offs {
			b = binary.LittleEndian.AppendUint32(b, o)
		}
	}
	for _, p := range c.payload {
		for _, v := range p {
			b = binary.LittleEndian.AppendUint16(b, v)
		}
	}
	return b
}

// codecBitmapPayload returns a bitmap container payload (as u16 words) with the given bits set.
func codecBitmapPayload(bits ...int) []uint16 {
	p := make([]uint16, roaringBitmapBytes/2)
	for _, v := range bits {
		p[v/16] |= 1 << (v % 16)
	}
	return p
}

func TestCodecRoaringRejects(t *testing.T) {
	bits4097 := make([]int, 4097)
	for i := range bits4097 {
		bits4097[i] = i
	}
	valid := codecRoaringBuild{count: 2, desc: []uint16{0, 1, 1, 0}, payload: [][]uint16{{1, 42}, {7}}}
	if ids, _, err := DecodeRoaring(valid.bytes(), nil); err != nil || !slices.Equal(ids, []uint32{1, 42, 1<<16 | 7}) {
		t.Fatalf("hand-built bitmap does not decode: %v, %v", ids, err)
	}
	validRuns := codecRoaringBuild{runs: true, count: 2, flags: []byte{1}, desc: []uint16{0, 5, 2, 0}, payload: [][]uint16{{1, 5, 5}, {9}}}
	if ids, _, err := DecodeRoaring(validRuns.bytes(), nil); err != nil || !slices.Equal(ids, []uint32{5, 6, 7, 8, 9, 10, 2<<16 | 9}) {
		t.Fatalf("hand-built run bitmap does not decode: %v, %v", ids, err)
	}
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"unknown cookie", codecHex(t, "3c300000 00000000")},
		{"no-run count missing", codecHex(t, "3a300000")},
		{"count above 65536", codecHex(t, "3a300000 01000100")},
		{"count does not fit", codecHex(t, "3a300000 ffff0000 0000")},
		{"keys descending", codecRoaringBuild{count: 2, desc: []uint16{1, 0, 0, 0}, payload: [][]uint16{{1}, {2}}}.bytes()},
		{"keys equal", codecRoaringBuild{count: 2, desc: []uint16{1, 0, 1, 0}, payload: [][]uint16{{1}, {2}}}.bytes()},
		{"array unsorted", codecRoaringBuild{count: 1, desc: []uint16{0, 1}, payload: [][]uint16{{42, 1}}}.bytes()},
		{"array duplicate", codecRoaringBuild{count: 1, desc: []uint16{0, 1}, payload: [][]uint16{{42, 42}}}.bytes()},
		{"bad offset", codecRoaringBuild{count: 1, desc: []uint16{0, 0}, offsets: []uint32{17}, payload: [][]uint16{{1}}}.bytes()},
		{"bitmap popcount too low", codecRoaringBuild{count: 1, desc: []uint16{0, 4097}, payload: [][]uint16{codecBitmapPayload(bits4097...)}}.bytes()},
		{"bitmap popcount too high", codecRoaringBuild{count: 1, desc: []uint16{0, 4095}, payload: [][]uint16{codecBitmapPayload(bits4097...)}}.bytes()},
		{"run overlap", codecRoaringBuild{runs: true, count: 1, flags: []byte{1}, desc: []uint16{0, 9}, payload: [][]uint16{{2, 10, 5, 4, 20, 0}}}.bytes()},
		{"runs unsorted", codecRoaringBuild{runs: true, count: 1, flags: []byte{1}, desc: []uint16{0, 1}, payload: [][]uint16{{2, 10, 0, 5, 0}}}.bytes()},
		{"run overflows 16 bits", codecRoaringBuild{runs: true, count: 1, flags: []byte{1}, desc: []uint16{0, 10}, payload: [][]uint16{{1, 65530, 10}}}.bytes()},
		{"run cardinality mismatch", codecRoaringBuild{runs: true, count: 1, flags: []byte{1}, desc: []uint16{0, 3}, payload: [][]uint16{{1, 0, 9}}}.bytes()},
		{"zero runs", codecRoaringBuild{runs: true, count: 1, flags: []byte{1}, desc: []uint16{0, 0}, payload: [][]uint16{{0}}}.bytes()},
		{"run bitset missing", codecHex(t, "3b300000")},
		{"run format bad offset", codecRoaringBuild{runs: true, count: 4, flags: []byte{0}, desc: []uint16{0, 0, 1, 0, 2, 0, 3, 0},
			offsets: []uint32{21, 23, 25, 28}, payload: [][]uint16{{1}, {1}, {1}, {1}}}.bytes()},
	}
	for _, tt := range tests {
		dst := make([]uint32, 1, 100)
		ids, n, err := DecodeRoaring(tt.b, dst)
		if err == nil {
			t.Errorf("%s: DecodeRoaring(%x) = %v, %d; want an error", tt.name, codecTrim(tt.b), ids, n)
		} else if n != 0 || len(ids) != 1 {
			t.Errorf("%s: on error, n = %d and %d ids; want 0 and dst unchanged", tt.name, n, len(ids))
		}
		if _, err := DecodeLinksValue(append([]byte{TagLinks}, tt.b...), nil); err == nil {
			t.Errorf("%s: DecodeLinksValue accepted it", tt.name)
		}
	}
	// Links values: tag and trailing bytes.
	for _, v := range []string{"", "00 3a300000 00000000", "07 3a300000 00000000", "01 3a300000 00000000 00"} {
		if ids, err := DecodeLinksValue(codecHex(t, v), nil); err == nil {
			t.Errorf("DecodeLinksValue(%s) = %v, want an error", v, ids)
		}
	}
	// Encoders refuse unsorted or duplicate ids and leave dst unchanged.
	for _, ids := range [][]uint32{{2, 1}, {1, 1}, {0, 5, 5, 6}} {
		if b, err := AppendRoaring([]byte{9}, ids); err == nil || !bytes.Equal(b, []byte{9}) {
			t.Errorf("AppendRoaring(%v) = %x, %v; want an error", ids, b, err)
		}
		if b, err := AppendLinksValue([]byte{9}, ids); err == nil || !bytes.Equal(b, []byte{9}) {
			t.Errorf("AppendLinksValue(%v) = %x, %v; want an error", ids, b, err)
		}
	}
	if got := AppendRoaringBitmap(nil, nil); !bytes.Equal(got, codecHex(t, "3a300000 00000000")) {
		t.Errorf("AppendRoaringBitmap(nil) = %x", got)
	}
}

// TestCodecRoaringAdjacentRuns accepts runs that touch (valid, if not canonical).
func TestCodecRoaringAdjacentRuns(t *testing.T) {
	b := codecRoaringBuild{runs: true, count: 1, flags: []byte{1}, desc: []uint16{0, 5}, payload: [][]uint16{{2, 0, 2, 3, 2}}}.bytes()
	ids, _, err := DecodeRoaring(b, nil)
	if err != nil || !slices.Equal(ids, []uint32{0, 1, 2, 3, 4, 5}) {
		t.Fatalf("DecodeRoaring = %v, %v", ids, err)
	}
}

func TestCodecLinksNoAllocs(t *testing.T) {
	ids := make([]uint32, 32)
	for i := range ids {
		ids[i] = uint32(i*i*97 + 3)
	}
	val, err := AppendLinksValue(nil, ids)
	if err != nil {
		t.Fatal(err)
	}
	dst := make([]uint32, 0, 64)
	buf := make([]byte, 0, 256)
	allocs := testing.AllocsPerRun(100, func() {
		dst, _ = DecodeLinksValue(val, dst[:0])
		buf, _ = AppendLinksValue(buf[:0], dst)
	})
	if allocs != 0 || !slices.Equal(dst, ids) || !bytes.Equal(buf, val) {
		t.Fatalf("%v allocations per decode+encode, want 0", allocs)
	}
}

func TestCodecMetadata(t *testing.T) {
	// write_one_vector: euclidean, 3 dims, items {0}, entry points [0], max level 1.
	golden := codecHex(t, `65 75 63 6c 69 64 65 61 6e 00 | 00 00 00 03 | 00 00 00 12 |
		3a 30 00 00 01 00 00 00 00 00 00 00 10 00 00 00 00 00 | 00 00 00 00 | 01`)
	m := &Metadata{Distance: "euclidean", Dimensions: 3, Items: roaring.BitmapOf(0), EntryPoints: []uint32{0}, MaxLevel: 1}
	got, err := m.Append(nil)
	if err != nil || !bytes.Equal(got, golden) || len(got) != 41 {
		t.Fatalf("Append = %x, %v; want %x", got, err, golden)
	}
	codecCheckMetadata(t, golden, m)

	hundred := roaring.New()
	hundred.AddRange(0, 100) // a run container in memory: encoded without runs
	tamo := &Metadata{Distance: "tamo", Dimensions: 12, Items: hundred, EntryPoints: []uint32{1, 2, 3, 4}, MaxLevel: 42}
	b, err := tamo.Append([]byte("prefix"))
	if err != nil || !bytes.HasPrefix(b, []byte("prefixtamo\x00")) {
		t.Fatalf("Append = %q, %v", b, err)
	}
	codecCheckMetadata(t, b[6:], tamo)

	// The bitmap is what roaring-rs writes: no-run format, one array container of 100 values.
	if itemsLen := binary.BigEndian.Uint32(b[6+5+4:]); itemsLen != 8+8+200 {
		t.Fatalf("items_len = %d, want 216", itemsLen)
	}

	// Tolerances: nothing after the bitmap; a trailing partial entry point.
	empty := &Metadata{Distance: "cosine", Dimensions: 0, Items: roaring.New(), MaxLevel: 0}
	eb, _ := empty.Append(nil)
	codecCheckMetadata(t, eb[:len(eb)-1], empty)                                   // no max level byte at all
	codecCheckMetadata(t, append(slices.Clip(eb[:len(eb)-1]), 0, 0, 9), &Metadata{ // 2-byte partial chunk
		Distance: "cosine", Items: roaring.New(), MaxLevel: 9})
	codecCheckMetadata(t, append(slices.Clip(eb[:len(eb)-1]), 5, 0, 0, 0, 1, 2, 7), &Metadata{
		Distance: "cosine", Items: roaring.New(), EntryPoints: []uint32{5}, MaxLevel: 7})
}

func codecCheckMetadata(t *testing.T, b []byte, want *Metadata) {
	t.Helper()
	m, err := DecodeMetadata(b)
	if err != nil {
		t.Fatalf("DecodeMetadata(%x): %v", codecTrim(b), err)
	}
	if m.Distance != want.Distance || m.Dimensions != want.Dimensions || m.MaxLevel != want.MaxLevel ||
		!codecSameIDs(m.EntryPoints, want.EntryPoints) || !slices.Equal(m.Items.ToArray(), want.Items.ToArray()) {
		t.Fatalf("DecodeMetadata = %+v (items %v), want %+v (items %v)", m, m.Items.ToArray(), want, want.Items.ToArray())
	}
}

func TestCodecMetadataErrors(t *testing.T) {
	for _, m := range []*Metadata{
		{Distance: "bad\x00name", Items: roaring.New()},
		{Distance: "bad\xffutf8", Items: roaring.New()},
		{Distance: "eps", Items: roaring.New(), EntryPoints: []uint32{3, 2}},
		{Distance: "eps", Items: roaring.New(), EntryPoints: []uint32{3, 3}},
	} {
		if b, err := m.Append([]byte{1}); err == nil || !bytes.Equal(b, []byte{1}) {
			t.Errorf("Append(%+v) = %x, %v; want an error", m, b, err)
		}
	}
	bad := map[string]string{
		"empty":                     "",
		"no NUL":                    "74616d6f",
		"invalid UTF-8 name":        "ff00 0000000c 00000008 3a300000 00000000",
		"no dims":                   "00",
		"no items_len":              "00 0000000c",
		"items_len beyond the end":  "00 0000000c 00000009 3a300000 00000000",
		"items_len above the map":   "00 0000000c 00000009 3a300000 00000000 00",
		"items_len below the map":   "00 0000000c 00000007 3a300000 00000000",
		"corrupt bitmap":            "00 0000000c 00000008 3a300000 01000000",
		"wrong cookie":              "00 0000000c 00000008 3a310000 00000000",
		"bitmap with unsorted keys": "00 0000000c 00000014 3a300000 02000000 0100 0000 0000 0000 18000000 1a000000 0000 0000 2a",
	}
	for name, v := range bad {
		if m, err := DecodeMetadata(codecHex(t, v)); err == nil {
			t.Errorf("%s: DecodeMetadata = %+v, want an error", name, m)
		}
	}
}

func TestCodecVersion(t *testing.T) {
	want := codecHex(t, "00000000 00000001 00000003")
	if got := FormatVersion.Append(nil); !bytes.Equal(got, want) || FormatVersion.String() != "0.1.3" {
		t.Fatalf("FormatVersion = %x %q", got, FormatVersion)
	}
	for _, v := range []Version{{0, 1, 3}, {0, 10, 100}, {math.MaxUint32, 0, 1}} {
		got, err := DecodeVersion(v.Append(nil))
		if err != nil || got != v {
			t.Fatalf("DecodeVersion(%v) = %v, %v", v, got, err)
		}
	}
	if (Version{0, 10, 100}).String() != "0.10.100" {
		t.Fatal("String")
	}
	for _, n := range []int{0, 11, 13} {
		if _, err := DecodeVersion(make([]byte, n)); err == nil {
			t.Errorf("DecodeVersion of %d bytes succeeded", n)
		}
	}
}

func TestCodecUpdateStatus(t *testing.T) {
	tests := []struct {
		s    UpdateStatus
		want byte
	}{{StatusUpdated, 0}, {StatusRemoved, 1}}
	for _, tt := range tests {
		if b := tt.s.Bytes(); !bytes.Equal(b, []byte{tt.want}) {
			t.Errorf("%d.Bytes() = %x", tt.s, b)
		}
		if s, err := DecodeUpdateStatus([]byte{tt.want}); err != nil || s != tt.s {
			t.Errorf("DecodeUpdateStatus(%d) = %d, %v", tt.want, s, err)
		}
	}
	for _, b := range [][]byte{nil, {}, {2}, {0xff}, {0, 0}, {1, 0}} {
		if s, err := DecodeUpdateStatus(b); err == nil || !strings.Contains(err.Error(), "invalid update status") {
			t.Errorf("DecodeUpdateStatus(%x) = %d, %v; want an error", b, s, err)
		}
	}
}

// TestCodecTruncations checks that every decoder rejects every proper prefix of a valid value
// (without panicking) where a prefix cannot itself be valid.
func TestCodecTruncations(t *testing.T) {
	type decoder func([]byte) error
	roaringDec := func(b []byte) error { _, _, err := DecodeRoaring(b, nil); return err }
	linksDec := func(b []byte) error { _, err := DecodeLinksValue(b, nil); return err }
	var values []struct {
		name string
		b    []byte
		dec  decoder
	}
	add := func(name string, b []byte, dec decoder) {
		values = append(values, struct {
			name string
			b    []byte
			dec  decoder
		}{name, b, dec})
	}
	for name, ids := range codecIDSets() {
		if len(ids) > 5000 {
			continue // keep the quadratic loop fast; the shapes are covered by smaller sets
		}
		b, _ := AppendRoaring(nil, ids)
		add("roaring "+name, b, roaringDec)
		l, _ := AppendLinksValue(nil, ids)
		add("links "+name, l, linksDec)
	}
	runs := roaring.New()
	runs.AddRange(5, 1000)
	runs.AddRange(1<<16, 1<<16+3)
	runs.Add(2 << 16)
	runs.AddRange(5<<16, 6<<16)
	rb, _ := runs.ToBytes()
	add("roaring with runs", rb, roaringDec)
	add("key", LinksKey(1, 2, 3).Bytes(), func(b []byte) error { _, err := DecodeKey(b); return err })
	add("version", FormatVersion.Append(nil), func(b []byte) error { _, err := DecodeVersion(b); return err })
	add("status", StatusRemoved.Bytes(), func(b []byte) error { _, err := DecodeUpdateStatus(b); return err })
	for _, tt := range values {
		if err := tt.dec(tt.b); err != nil {
			t.Fatalf("%s: valid value rejected: %v", tt.name, err)
		}
		for n := 0; n < len(tt.b); n++ {
			if err := tt.dec(slices.Clip(tt.b[:n])); err == nil {
				t.Fatalf("%s: prefix of %d of %d bytes accepted", tt.name, n, len(tt.b))
			}
		}
	}

	// Item values: a prefix is valid only when it ends on a word boundary after the header.
	item := AppendItemValue(nil, []byte{1, 2, 3, 4}, make([]byte, 12))
	for n := 0; n < len(item); n++ {
		_, _, err := DecodeItemValue(item[:n], 4, 4)
		if valid := n >= 5 && (n-5)%4 == 0; valid != (err == nil) {
			t.Fatalf("item prefix of %d bytes: err %v", n, err)
		}
	}

	// Metadata: every prefix that cuts the name, dims, items_len or bitmap fails; longer ones
	// are accepted like upstream (the entry points and max level are optional).
	m := &Metadata{Distance: "euclidean", Dimensions: 3, Items: roaring.BitmapOf(0, 1, 70000), EntryPoints: []uint32{0, 70000}, MaxLevel: 1}
	mb, _ := m.Append(nil)
	bitmapEnd := len(mb) - 9
	for n := 0; n < len(mb); n++ {
		_, err := DecodeMetadata(mb[:n])
		if (n >= bitmapEnd) != (err == nil) {
			t.Fatalf("metadata prefix of %d bytes (bitmap ends at %d): err %v", n, bitmapEnd, err)
		}
	}
}

func BenchmarkDecodeLinksValue(b *testing.B) {
	ids := make([]uint32, 32)
	for i := range ids {
		ids[i] = uint32(i*7919 + 11)
	}
	val, _ := AppendLinksValue(nil, ids)
	dst := make([]uint32, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		dst, _ = DecodeLinksValue(val, dst[:0])
	}
}

func BenchmarkAppendLinksValue(b *testing.B) {
	ids := make([]uint32, 32)
	for i := range ids {
		ids[i] = uint32(i*7919 + 11)
	}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = AppendLinksValue(buf[:0], ids)
	}
}
