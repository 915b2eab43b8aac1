package encap

import "testing"

func TestHeaderRoundTrip(t *testing.T) {
	for _, vni := range []uint32{1, 1001, MaxVNI} {
		b := make([]byte, HeaderLen)
		if err := PutHeader(b, vni); err != nil {
			t.Fatal(err)
		}
		if b[0] != 0x08 || b[1] != 0 || b[7] != 0 {
			t.Fatalf("header %x: flags or reserved bytes wrong", b)
		}
		got, err := ParseHeader(b)
		if err != nil || got != vni {
			t.Fatalf("ParseHeader = %d, %v; want %d", got, err, vni)
		}
	}
	if err := PutHeader(make([]byte, 8), MaxVNI+1); err == nil {
		t.Fatal("VNI above 24 bits accepted")
	}
	if _, err := ParseHeader([]byte{0, 0, 0, 0, 0, 0, 1, 0}); err != ErrNoVNI {
		t.Fatalf("missing I flag: %v", err)
	}
	if _, err := ParseHeader([]byte{8}); err != ErrShort {
		t.Fatalf("short header: %v", err)
	}
}

func FuzzParseHeader(f *testing.F) {
	f.Add([]byte{8, 0, 0, 0, 0, 3, 0xe9, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		vni, err := ParseHeader(b)
		if err == nil && vni > MaxVNI {
			t.Fatalf("VNI %d above 24 bits", vni)
		}
	})
}
